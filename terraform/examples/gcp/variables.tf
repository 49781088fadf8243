variable "project_id" {
  type        = string
  description = "GCP project to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the cluster."
  default     = "europe-west1"
}

variable "zones" {
  type        = list(string)
  description = "Three zones of the region, one broker in each."
  default     = ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
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

variable "ssl_certificate_ids" {
  type        = list(string)
  description = "Regional SSL certificates for api_hostname, in region."
}

variable "api_hostname" {
  type        = string
  description = "DNS name clients use for the API; point an A record at the load_balancer_ip output."
}
