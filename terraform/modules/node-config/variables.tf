variable "node_id" {
  type        = number
  description = "Raft node id of this broker, as it appears in `peers` (1, 2, 3, ...)."

  validation {
    condition     = var.node_id >= 1 && floor(var.node_id) == var.node_id
    error_message = "node_id must be a whole number >= 1."
  }

  validation {
    condition     = contains([for p in var.peers : p.id], var.node_id)
    error_message = "node_id must be one of the ids listed in peers."
  }
}

variable "cluster_id" {
  type        = string
  description = "The cluster's id, the same on every broker: a new node's data dir records it, and a data dir of another cluster is refused."

  validation {
    condition     = can(regex("^[!-~]{1,128}$", var.cluster_id))
    error_message = "cluster_id must be 1 to 128 visible ASCII characters."
  }
}

variable "peers" {
  type = list(object({
    id   = number
    host = string
  }))
  description = "Every broker of the cluster, this one included: Raft node id and the host (IP or DNS name) its cluster port listens on. Rendered as `--peers 1=host:6222,2=host:6222,...`."

  validation {
    condition     = length(var.peers) >= 1 && length(var.peers) % 2 == 1
    error_message = "peers must list an odd number of brokers (1, 3, 5, ...), so that a majority always exists."
  }

  validation {
    condition     = length(distinct([for p in var.peers : p.id])) == length(var.peers)
    error_message = "peer ids must be unique."
  }

  validation {
    condition     = alltrue([for p in var.peers : p.id >= 1 && floor(p.id) == p.id])
    error_message = "peer ids must be whole numbers >= 1."
  }

  validation {
    condition     = alltrue([for p in var.peers : can(regex("^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", p.host))])
    error_message = "peer hosts must be IPv4 addresses or DNS names (letters, digits, dots and dashes)."
  }
}

variable "api_port" {
  type        = number
  description = "Port of the public HTTP API and dashboard (`--listen`)."
  default     = 4444

  validation {
    condition     = var.api_port >= 1 && var.api_port <= 65535 && floor(var.api_port) == var.api_port
    error_message = "api_port must be a port number between 1 and 65535."
  }
}

variable "cluster_port" {
  type        = number
  description = "Port of cluster traffic between brokers (`--cluster-listen`, and the port of every peer)."
  default     = 6222

  validation {
    condition     = var.cluster_port >= 1 && var.cluster_port <= 65535 && floor(var.cluster_port) == var.cluster_port
    error_message = "cluster_port must be a port number between 1 and 65535."
  }

  validation {
    condition     = var.cluster_port != var.api_port
    error_message = "cluster_port must differ from api_port: cluster traffic is never served on the public listener."
  }
}

variable "listen_address" {
  type        = string
  description = "Address both listeners bind to. The cloud firewalls decide who reaches each port."
  default     = "0.0.0.0"

  validation {
    condition     = can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", var.listen_address))
    error_message = "listen_address must be an IPv4 address such as 0.0.0.0."
  }
}

variable "mount_point" {
  type        = string
  description = "Where the node's own persistent volume is mounted. The data dir is the `data` directory inside it (kept apart from the filesystem's lost+found)."
  default     = "/var/lib/depot"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.mount_point)) && !endswith(var.mount_point, "/")
    error_message = "mount_point must be an absolute path without a trailing slash."
  }
}

variable "volume_device" {
  type        = string
  description = "Stable path of the data volume's block device on the VM, for example /dev/disk/by-id/google-depot-data."

  validation {
    condition     = startswith(var.volume_device, "/dev/")
    error_message = "volume_device must be a path under /dev/."
  }
}

variable "volume_filesystem" {
  type        = string
  description = "Filesystem created on the data volume when it is blank (an existing filesystem is never reformatted)."
  default     = "ext4"

  validation {
    condition     = contains(["ext4", "xfs"], var.volume_filesystem)
    error_message = "volume_filesystem must be ext4 or xfs."
  }
}

variable "volume_wait_seconds" {
  type        = number
  description = "How long the first boot waits for the data volume to be attached before it gives up."
  default     = 600

  validation {
    condition     = var.volume_wait_seconds >= 30 && var.volume_wait_seconds <= 3600
    error_message = "volume_wait_seconds must be between 30 and 3600."
  }
}

variable "wait_for" {
  type        = number
  description = "`--wait-for N`: the cluster does not go active until N members are up. Null means the number of peers."
  default     = null

  validation {
    condition     = var.wait_for == null ? true : (var.wait_for >= 1 && var.wait_for <= length(var.peers) && floor(var.wait_for) == var.wait_for)
    error_message = "wait_for must be a whole number between 1 and the number of peers."
  }
}

variable "metadata_url" {
  type        = string
  description = "Optional Postgres URL written to the config file. It must not carry a password: the usual way is to leave this null and deliver DEPOT_METADATA_URL, password included, through the secrets."
  default     = null

  validation {
    condition     = var.metadata_url == null ? true : can(regex("^postgres(ql)?://", var.metadata_url))
    error_message = "metadata_url must start with postgres:// or postgresql://."
  }

  validation {
    condition     = var.metadata_url == null ? true : !can(regex("^postgres(ql)?://[^/@]*:[^/@]*@", var.metadata_url))
    error_message = "metadata_url must not contain a password; deliver it as DEPOT_METADATA_URL through the secrets instead."
  }
}

variable "binary_url" {
  type        = string
  description = "HTTPS URL of the `depot` executable (the binary itself, not an archive) for the VM's architecture."

  validation {
    condition     = startswith(var.binary_url, "https://")
    error_message = "binary_url must be an https:// URL."
  }
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 of the file at binary_url, 64 lowercase hex digits. Boot stops before installing a binary that does not match."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hexadecimal digits."
  }
}

variable "secrets_command" {
  type        = string
  description = "Shell commands, run as root at every start of the service, that print the secrets as an environment file (DEPOT_CLUSTER_SECRET=..., DEPOT_JWT_SECRET=..., DEPOT_METADATA_URL=..., ...) on stdout, typically read from the cloud's secret store. Exactly one of secrets_command and secrets_env is set."
  default     = null

  validation {
    condition     = (var.secrets_command == null) != (var.secrets_env == null)
    error_message = "Set exactly one of secrets_command and secrets_env."
  }
}

variable "secrets_env" {
  type        = string
  description = "The secrets environment file itself, for platforms without a secret store: written into the user data and from there to a root-only file. Exactly one of secrets_command and secrets_env is set."
  default     = null
  sensitive   = true

  validation {
    condition     = var.secrets_env == null ? true : can(regex("(^|\n)DEPOT_CLUSTER_SECRET=", var.secrets_env))
    error_message = "secrets_env must define DEPOT_CLUSTER_SECRET."
  }
}

variable "tiering" {
  type = object({
    bucket   = string
    endpoint = string
    region   = string
  })
  description = "S3-compatible bucket for tiered segments (credentials, when the platform needs static ones, come through the secrets as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Null leaves tiering off."
  default     = null

  validation {
    condition     = var.tiering == null ? true : (length(var.tiering.bucket) > 0 && startswith(var.tiering.endpoint, "https://") && length(var.tiering.region) > 0)
    error_message = "tiering needs a bucket name, an https:// endpoint and a region."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days of rotated logs kept in /var/log/depot (one file a day, compressed)."
  default     = 14

  validation {
    condition     = var.log_retention_days >= 1 && var.log_retention_days <= 365
    error_message = "log_retention_days must be between 1 and 365."
  }
}

variable "log_max_size_mb" {
  type        = number
  description = "A log file larger than this is rotated before the day is over."
  default     = 100

  validation {
    condition     = var.log_max_size_mb >= 1
    error_message = "log_max_size_mb must be at least 1."
  }
}

variable "extra_packages" {
  type        = list(string)
  description = "Further OS packages to install on first boot (logrotate and the filesystem tools are always installed)."
  default     = []

  validation {
    condition     = alltrue([for p in var.extra_packages : can(regex("^[A-Za-z0-9][A-Za-z0-9.+_-]*$", p))])
    error_message = "extra_packages must be plain package names."
  }
}
