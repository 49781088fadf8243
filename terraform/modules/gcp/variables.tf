variable "project_id" {
  type        = string
  description = "GCP project to deploy into."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id (6-30 lowercase letters, digits and dashes)."
  }
}

variable "region" {
  type        = string
  description = "Region of the cluster (brokers, Cloud SQL, bucket, load balancer), for example europe-west1."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like europe-west1."
  }
}

variable "zones" {
  type        = list(string)
  description = "Zones of the region to spread the brokers over, round robin (for example [\"europe-west1-b\", \"europe-west1-c\", \"europe-west1-d\"])."

  validation {
    condition     = length(var.zones) >= 1 && length(var.zones) <= 4 && length(distinct(var.zones)) == length(var.zones)
    error_message = "zones must list 1 to 4 distinct zones (three lets a 3-node cluster lose a zone)."
  }

  validation {
    condition     = alltrue([for z in var.zones : startswith(z, "${var.region}-")])
    error_message = "every zone must belong to region."
  }
}

variable "name" {
  type        = string
  description = "Name of this Depot cluster; prefixes every resource name."
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

variable "enable_apis" {
  type        = bool
  description = "Enable the project APIs the module needs (Compute, Cloud SQL Admin, Service Networking, Secret Manager, Storage). They are left enabled on destroy."
  default     = true
}

variable "subnet_cidr" {
  type        = string
  description = "CIDR of the brokers' subnet."
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "proxy_subnet_cidr" {
  type        = string
  description = "CIDR of the proxy-only subnet the regional load balancer needs (a /23 is Google's recommendation; /26 is the minimum)."
  default     = "10.42.2.0/23"

  validation {
    condition     = can(cidrhost(var.proxy_subnet_cidr, 0)) && tonumber(split("/", var.proxy_subnet_cidr)[1]) <= 26
    error_message = "proxy_subnet_cidr must be an IPv4 CIDR block of /26 or larger."
  }
}

variable "database_peering_prefix_length" {
  type        = number
  description = "Size of the private services range reserved for Cloud SQL (prefix length)."
  default     = 20

  validation {
    condition     = var.database_peering_prefix_length >= 16 && var.database_peering_prefix_length <= 24
    error_message = "database_peering_prefix_length must be between 16 and 24."
  }
}

variable "machine_type" {
  type        = string
  description = "Machine type of the brokers."
  default     = "n2-standard-2"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.machine_type))
    error_message = "machine_type must look like n2-standard-2."
  }
}

variable "image" {
  type        = string
  description = "Boot image of the brokers. It must run cloud-init (Ubuntu does; Debian and Container-Optimized OS images do not). Existing brokers keep their image until replaced one at a time."
  default     = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"

  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "boot_disk_size_gb" {
  type        = number
  description = "Boot disk size of each broker (OS, binary, logs), in GB."
  default     = 20

  validation {
    condition     = var.boot_disk_size_gb >= 10 && var.boot_disk_size_gb <= 1024
    error_message = "boot_disk_size_gb must be between 10 and 1024."
  }
}

variable "data_disk_size_gb" {
  type        = number
  description = "Size of each broker's own persistent data disk (the data dir), in GB. It can grow later; it never shrinks."
  default     = 100

  validation {
    condition     = var.data_disk_size_gb >= 10 && var.data_disk_size_gb <= 65536
    error_message = "data_disk_size_gb must be between 10 and 65536."
  }
}

variable "data_disk_type" {
  type        = string
  description = "Persistent disk type of the data disks."
  default     = "pd-ssd"

  validation {
    condition     = contains(["pd-ssd", "pd-balanced", "pd-extreme"], var.data_disk_type)
    error_message = "data_disk_type must be pd-ssd, pd-balanced or pd-extreme."
  }
}

variable "disk_snapshot_retention_days" {
  type        = number
  description = "Daily snapshots of the data disks are kept this many days. 0 turns them off."
  default     = 7

  validation {
    condition     = var.disk_snapshot_retention_days >= 0 && var.disk_snapshot_retention_days <= 365
    error_message = "disk_snapshot_retention_days must be between 0 and 365."
  }
}

variable "binary_url" {
  type        = string
  description = "HTTPS URL of the `depot` executable (linux, the machine type's architecture), downloaded by each node on first boot."

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

variable "ssl_certificate_ids" {
  type        = list(string)
  description = "Regional SSL certificates (google_compute_region_ssl_certificate ids or self links, in region) the load balancer serves on port 4444."

  validation {
    condition     = length(var.ssl_certificate_ids) >= 1 && length(var.ssl_certificate_ids) <= 15
    error_message = "ssl_certificate_ids must list 1 to 15 certificates."
  }
}

variable "api_hostname" {
  type        = string
  description = "DNS name clients use for the API (an A record pointing at the load_balancer_ip output). Only used to build the api_endpoint output; null uses the IP."
  default     = null

  validation {
    condition     = var.api_hostname == null ? true : can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.api_hostname))
    error_message = "api_hostname must be a lowercase DNS name."
  }
}

variable "api_allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the API (enforced by a Cloud Armor policy on the load balancer)."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.api_allowed_cidrs) >= 1 && length(var.api_allowed_cidrs) <= 10 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must list 1 to 10 IPv4 CIDR blocks."
  }
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "Networks allowed to SSH (port 22) to the brokers, which log in through OS Login. Empty, the default, keeps SSH closed."
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ssh_allowed_cidrs must be IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "lb_timeout_seconds" {
  type        = number
  description = "Load balancer backend timeout. Must exceed the longest long poll (wait_ms at most 20 s) with room to spare."
  default     = 75

  validation {
    condition     = var.lb_timeout_seconds > 20 && var.lb_timeout_seconds <= 86400
    error_message = "lb_timeout_seconds must be more than 20 (the longest long poll)."
  }
}

variable "db_tier" {
  type        = string
  description = "Cloud SQL machine tier of the metadata store (Enterprise edition)."
  default     = "db-custom-2-7680"

  validation {
    condition     = startswith(var.db_tier, "db-")
    error_message = "db_tier must be a Cloud SQL tier such as db-custom-2-7680."
  }
}

variable "db_version" {
  type        = string
  description = "Cloud SQL PostgreSQL version of the metadata store."
  default     = "POSTGRES_16"

  validation {
    condition     = contains(["POSTGRES_14", "POSTGRES_15", "POSTGRES_16", "POSTGRES_17", "POSTGRES_18"], var.db_version)
    error_message = "db_version must be one of POSTGRES_14 to POSTGRES_18."
  }
}

variable "db_high_availability" {
  type        = bool
  description = "Run the metadata store REGIONAL (a standby in another zone, automatic failover)."
  default     = true
}

variable "db_disk_size_gb" {
  type        = number
  description = "Initial disk of the metadata store, in GB (it grows automatically)."
  default     = 20

  validation {
    condition     = var.db_disk_size_gb >= 10
    error_message = "db_disk_size_gb must be at least 10."
  }
}

variable "db_backup_retention_count" {
  type        = number
  description = "Number of daily Cloud SQL backups kept (point-in-time recovery covers the last 7 days)."
  default     = 14

  validation {
    condition     = var.db_backup_retention_count >= 1 && var.db_backup_retention_count <= 365
    error_message = "db_backup_retention_count must be between 1 and 365."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the Cloud SQL metadata store from deletion (turn off, apply, then destroy). Brokers stay replaceable one at a time; their data disks are separate resources."
  default     = true
}

variable "bucket_noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object version stays in the tiering bucket before it is deleted."
  default     = 30

  validation {
    condition     = var.bucket_noncurrent_version_days >= 1
    error_message = "bucket_noncurrent_version_days must be at least 1."
  }
}

variable "bucket_access_log_bucket" {
  type        = string
  description = "Existing bucket that receives the tiering bucket's usage logs. Null turns them off."
  default     = null
}

variable "kms_key_name" {
  type        = string
  description = "Cloud KMS key (projects/.../cryptoKeys/...) to encrypt disks, bucket, database and secret with (CMEK). Null keeps Google's default encryption at rest. The service agents of Compute Engine, Cloud Storage, Cloud SQL and Secret Manager need roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  default     = null

  validation {
    condition     = var.kms_key_name == null ? true : can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full Cloud KMS crypto key name."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes them."
  default     = {}
}
