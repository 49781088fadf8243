variable "region" {
  type        = string
  description = "DigitalOcean region of the cluster."
  default     = "fra1"
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

variable "domain" {
  type        = string
  description = "A domain managed in DigitalOcean DNS."
}

variable "ssh_key_ids" {
  type        = list(string)
  description = "DigitalOcean SSH key IDs or fingerprints for root (SSH stays closed by the firewall)."
}
