variable "region" {
  type        = string
  description = "AWS region to deploy into."
  default     = "eu-west-1"
}

variable "availability_zones" {
  type        = list(string)
  description = "Three zones of the region, one broker in each."
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "name" {
  type        = string
  description = "Name of the Depot cluster."
  default     = "depot"
}

variable "node_count" {
  type        = number
  description = "Number of brokers (odd)."
  default     = 3
}

variable "binary_url" {
  type        = string
  description = "HTTPS URL of the depot binary (linux x86_64)."
}

variable "binary_sha256" {
  type        = string
  description = "SHA-256 of that binary."
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate for api_hostname, in region."
}

variable "api_hostname" {
  type        = string
  description = "DNS name clients use for the API; point it at the load_balancer_dns_name output."
}
