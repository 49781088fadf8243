# A three-broker Depot cluster on GCP. See docs/deploy.md.

provider "google" {
  project = var.project_id
  region  = var.region
}

module "depot" {
  source = "../../modules/gcp"

  project_id = var.project_id
  region     = var.region
  zones      = var.zones
  name       = var.name
  node_count = var.node_count

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  ssl_certificate_ids = var.ssl_certificate_ids
  api_hostname        = var.api_hostname
}
