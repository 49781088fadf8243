# A three-broker Depot cluster on DigitalOcean. See docs/deploy.md.
#
# Credentials come from the environment: DIGITALOCEAN_TOKEN for the API, and
# SPACES_ACCESS_KEY_ID / SPACES_SECRET_ACCESS_KEY for creating the bucket.

provider "digitalocean" {}

module "depot" {
  source = "../../modules/digitalocean"

  name       = var.name
  node_count = var.node_count
  region     = var.region

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  domain      = var.domain
  ssh_key_ids = var.ssh_key_ids
}
