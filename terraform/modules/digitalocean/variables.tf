variable "name" {
  type        = string
  description = "Name of this Depot cluster; prefixes every resource name and tag."
  default     = "depot"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3-20 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "node_count" {
  type        = number
  description = "Number of brokers: an odd number, so that a majority exists (3 survives one loss, 5 survives two). 1 is for trials only."
  default     = 3

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 9 && var.node_count % 2 == 1
    error_message = "node_count must be odd: 1, 3, 5, 7 or 9."
  }
}

variable "region" {
  type        = string
  description = "DigitalOcean region of the brokers, database, VPC and load balancer, for example fra1."

  validation {
    condition     = can(regex("^[a-z]{3}[0-9]$", var.region))
    error_message = "region must be a region slug such as fra1 or nyc3."
  }
}

variable "spaces_region" {
  type        = string
  description = "Region of the Spaces bucket (Spaces exists in fewer regions than Droplets). Null means region."
  default     = null

  validation {
    condition     = var.spaces_region == null ? true : can(regex("^[a-z]{3}[0-9]$", var.spaces_region))
    error_message = "spaces_region must be a region slug such as fra1 or nyc3."
  }
}

variable "vpc_ip_range" {
  type        = string
  description = "Private range of the VPC this module creates (it must not overlap other VPCs of the account)."
  default     = "10.42.0.0/20"

  validation {
    condition     = can(cidrhost(var.vpc_ip_range, 0)) && tonumber(split("/", var.vpc_ip_range)[1]) >= 16 && tonumber(split("/", var.vpc_ip_range)[1]) <= 24
    error_message = "vpc_ip_range must be an IPv4 CIDR block between /16 and /24."
  }
}

variable "droplet_size" {
  type        = string
  description = "Droplet size slug of the brokers."
  default     = "s-2vcpu-4gb"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.droplet_size))
    error_message = "droplet_size must be a size slug such as s-2vcpu-4gb."
  }
}

variable "image" {
  type        = string
  description = "Droplet image slug. It must run cloud-init (the Ubuntu images do). Existing brokers keep their image until replaced one at a time."
  default     = "ubuntu-24-04-x64"

  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "ssh_key_ids" {
  type        = list(string)
  description = "IDs or fingerprints of DigitalOcean SSH keys installed for root (without one, DigitalOcean emails a root password). Port 22 stays closed unless ssh_allowed_cidrs opens it."

  validation {
    condition     = length(var.ssh_key_ids) >= 1
    error_message = "ssh_key_ids must list at least one key."
  }
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "Networks allowed to SSH (port 22) to the brokers. Empty, the default, keeps SSH closed."
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ssh_allowed_cidrs must be IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "volume_size_gb" {
  type        = number
  description = "Size of each broker's own block storage volume (the data dir), in GiB. It can grow later; it never shrinks."
  default     = 100

  validation {
    condition     = var.volume_size_gb >= 10 && var.volume_size_gb <= 16384
    error_message = "volume_size_gb must be between 10 and 16384."
  }
}

variable "binary_url" {
  type        = string
  description = "HTTPS URL of the `depot` executable (linux x86_64), downloaded by each node on first boot."

  validation {
    condition     = startswith(var.binary_url, "https://")
    error_message = "binary_url must be an https:// URL."
  }
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 of the file at binary_url (64 lowercase hex digits); a node refuses a binary that does not match."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hexadecimal digits."
  }
}

variable "domain" {
  type        = string
  description = "A domain already managed in DigitalOcean DNS. The module adds the API record and one private record per broker (the brokers find each other by these names), and a Let's Encrypt certificate for the API."

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", var.domain))
    error_message = "domain must be a lowercase DNS domain such as example.com."
  }
}

variable "api_subdomain" {
  type        = string
  description = "Name of the API record in domain: the API is served at https://<api_subdomain>.<domain>:4444."
  default     = "depot"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.api_subdomain))
    error_message = "api_subdomain must be a single DNS label."
  }
}

variable "certificate_name" {
  type        = string
  description = "Name of an existing DigitalOcean certificate for the API hostname. Null issues a Let's Encrypt certificate for it."
  default     = null
}

variable "api_allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the API on the load balancer (port 4444)."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.api_allowed_cidrs) >= 1 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "lb_size_unit" {
  type        = number
  description = "Size of the load balancer in nodes (each adds connection capacity)."
  default     = 1

  validation {
    condition     = var.lb_size_unit >= 1 && var.lb_size_unit <= 100
    error_message = "lb_size_unit must be between 1 and 100."
  }
}

variable "lb_idle_timeout_seconds" {
  type        = number
  description = "Load balancer HTTP idle timeout. Must exceed the longest long poll (wait_ms at most 20 s) with room to spare."
  default     = 75

  validation {
    condition     = var.lb_idle_timeout_seconds > 20 && var.lb_idle_timeout_seconds >= 30 && var.lb_idle_timeout_seconds <= 600
    error_message = "lb_idle_timeout_seconds must be between 30 and 600 (and so more than the longest long poll, 20 s)."
  }
}

variable "db_size" {
  type        = string
  description = "Size slug of the managed PostgreSQL nodes."
  default     = "db-s-1vcpu-2gb"

  validation {
    condition     = startswith(var.db_size, "db-")
    error_message = "db_size must be a database size slug such as db-s-1vcpu-2gb."
  }
}

variable "db_node_count" {
  type        = number
  description = "Nodes of the managed PostgreSQL cluster: 1, or 2-3 for standby nodes with automatic failover."
  default     = 2

  validation {
    condition     = var.db_node_count >= 1 && var.db_node_count <= 3
    error_message = "db_node_count must be 1, 2 or 3."
  }
}

variable "db_version" {
  type        = string
  description = "Major PostgreSQL version of the metadata store."
  default     = "16"

  validation {
    condition     = contains(["14", "15", "16", "17"], var.db_version)
    error_message = "db_version must be 14, 15, 16 or 17."
  }
}

variable "bucket_noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object version stays in the Spaces bucket before it expires."
  default     = 30

  validation {
    condition     = var.bucket_noncurrent_version_days >= 1
    error_message = "bucket_noncurrent_version_days must be at least 1."
  }
}

variable "project_id" {
  type        = string
  description = "DigitalOcean project to file the Droplets, volumes, load balancer and database under. Null leaves them in the default project."
  default     = null
}

variable "tags" {
  type        = list(string)
  description = "Extra tags added to Droplets, volumes and the database."
  default     = []

  validation {
    condition     = alltrue([for t in var.tags : can(regex("^[A-Za-z0-9:_-]{1,255}$", t))])
    error_message = "tags may contain letters, digits, colons, dashes and underscores."
  }
}
