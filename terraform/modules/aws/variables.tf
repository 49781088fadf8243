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

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones to spread the brokers over, round robin (for example [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]). Named explicitly so that a zone AWS adds later never reshuffles the subnets."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list 2 to 6 distinct zones (the load balancer and Multi-AZ RDS need two; three lets a 3-node cluster lose a zone)."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR block of the VPC this module creates (public and private /24 subnets are carved from it)."
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 18
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /18 or larger."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the brokers. Must be a Nitro type (EBS volumes appear as NVMe devices) matching `architecture`."
  default     = "m6i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like m6i.large."
  }
}

variable "architecture" {
  type        = string
  description = "CPU architecture of the brokers; selects the Amazon Linux 2023 image, and must match the binary at binary_url."
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  type        = string
  description = "AMI for the brokers. Null means the latest Amazon Linux 2023 (which ships the AWS CLI the nodes use to read their secrets). Existing brokers keep their image until replaced one at a time."
  default     = null

  validation {
    condition     = var.ami_id == null ? true : can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "root_volume_size_gb" {
  type        = number
  description = "Size of each broker's root volume (OS, binary, logs), in GiB."
  default     = 20

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 1024
    error_message = "root_volume_size_gb must be between 8 and 1024."
  }
}

variable "data_volume_size_gb" {
  type        = number
  description = "Size of each broker's own EBS data volume (the data dir), in GiB. It can grow later; it never shrinks."
  default     = 100

  validation {
    condition     = var.data_volume_size_gb >= 10 && var.data_volume_size_gb <= 16384
    error_message = "data_volume_size_gb must be between 10 and 16384."
  }
}

variable "data_volume_iops" {
  type        = number
  description = "Provisioned IOPS of each gp3 data volume (fsync rate bounds durable produce latency)."
  default     = 3000

  validation {
    condition     = var.data_volume_iops >= 3000 && var.data_volume_iops <= 16000
    error_message = "data_volume_iops must be between 3000 and 16000 (gp3)."
  }
}

variable "binary_url" {
  type        = string
  description = "HTTPS URL of the `depot` executable for `architecture`, downloaded by each node on first boot."

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

variable "certificate_arn" {
  type        = string
  description = "ARN of the ACM certificate the load balancer serves on port 4444 (for api_hostname)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "api_hostname" {
  type        = string
  description = "DNS name clients use for the API (point it at the load_balancer_dns_name output). Only used to build the api_endpoint output; null uses the load balancer's own name."
  default     = null

  validation {
    condition     = var.api_hostname == null ? true : can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.api_hostname))
    error_message = "api_hostname must be a lowercase DNS name."
  }
}

variable "api_allowed_cidrs" {
  type        = list(string)
  description = "Client networks allowed to reach the API on the load balancer (port 4444)."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "Networks allowed to SSH (port 22) to the brokers. Empty, the default, keeps SSH closed; use SSM Session Manager instead."
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ssh_allowed_cidrs must be IPv4 CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "ssh_key_name" {
  type        = string
  description = "EC2 key pair for SSH, only useful together with ssh_allowed_cidrs. Null installs no key."
  default     = null
}

variable "enable_ssm_session_manager" {
  type        = bool
  description = "Let SSM Session Manager open shells on the brokers (audited, no open port)."
  default     = true
}

variable "lb_idle_timeout_seconds" {
  type        = number
  description = "Load balancer idle timeout. Must exceed the longest long poll (wait_ms at most 20 s) with room to spare."
  default     = 75

  validation {
    condition     = var.lb_idle_timeout_seconds > 20 && var.lb_idle_timeout_seconds <= 4000
    error_message = "lb_idle_timeout_seconds must be more than 20 (the longest long poll) and at most 4000."
  }
}

variable "lb_access_log_bucket" {
  type        = string
  description = "Existing S3 bucket that receives the load balancer's access logs (its policy must allow ELB log delivery). Null turns access logs off."
  default     = null
}

variable "waf_web_acl_arn" {
  type        = string
  description = "Regional WAFv2 web ACL to attach to the load balancer. Null attaches none."
  default     = null

  validation {
    condition     = var.waf_web_acl_arn == null ? true : can(regex("^arn:aws[a-z-]*:wafv2:", var.waf_web_acl_arn))
    error_message = "waf_web_acl_arn must be a WAFv2 web ACL ARN."
  }
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class of the metadata store."
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class must be an RDS class such as db.t4g.medium."
  }
}

variable "db_engine_version" {
  type        = string
  description = "Major PostgreSQL version of the metadata store."
  default     = "16"

  validation {
    condition     = contains(["14", "15", "16", "17", "18"], var.db_engine_version)
    error_message = "db_engine_version must be one of 14 to 18."
  }
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "Initial storage of the metadata store, in GiB (it grows automatically up to db_max_allocated_storage_gb)."
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gb >= 20 && var.db_allocated_storage_gb <= 65536
    error_message = "db_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "db_max_allocated_storage_gb" {
  type        = number
  description = "Ceiling of storage autoscaling for the metadata store, in GiB."
  default     = 100

  validation {
    condition     = var.db_max_allocated_storage_gb >= var.db_allocated_storage_gb
    error_message = "db_max_allocated_storage_gb must be at least db_allocated_storage_gb."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Run the metadata store Multi-AZ (a standby in another zone, automatic failover)."
  default     = true
}

variable "db_backup_retention_days" {
  type        = number
  description = "Days of automated RDS backups (point-in-time restore window)."
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database and the load balancer from deletion (turn off, apply, then destroy)."
  default     = true
}

variable "bucket_noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object version stays in the tiering bucket before it expires."
  default     = 30

  validation {
    condition     = var.bucket_noncurrent_version_days >= 1
    error_message = "bucket_noncurrent_version_days must be at least 1."
  }
}

variable "bucket_access_log_bucket" {
  type        = string
  description = "Existing S3 bucket that receives the tiering bucket's server access logs. Null turns them off."
  default     = null
}

variable "volume_snapshot_retention_days" {
  type        = number
  description = "Daily EBS snapshots of the data volumes are kept this many days (Data Lifecycle Manager). 0 turns them off."
  default     = 7

  validation {
    condition     = var.volume_snapshot_retention_days >= 0 && var.volume_snapshot_retention_days <= 365
    error_message = "volume_snapshot_retention_days must be between 0 and 365."
  }
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days VPC flow logs are kept in CloudWatch Logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a retention CloudWatch Logs accepts (for example 30, 90, 365)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
