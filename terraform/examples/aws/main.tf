# A three-broker Depot cluster on AWS. See docs/deploy.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project = "depot"
    }
  }
}

module "depot" {
  source = "../../modules/aws"

  name               = var.name
  node_count         = var.node_count
  availability_zones = var.availability_zones

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  certificate_arn = var.certificate_arn
  api_hostname    = var.api_hostname
}
