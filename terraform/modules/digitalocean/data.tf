# The Postgres metadata store and the tiering bucket.

# Managed PostgreSQL on the VPC, encrypted at rest by DigitalOcean, TLS required
# by the connection URL, and its firewall admits the brokers' tag only.
resource "digitalocean_database_cluster" "metadata" {
  name                 = "${var.name}-metadata"
  engine               = "pg"
  version              = var.db_version
  size                 = var.db_size
  region               = var.region
  node_count           = var.db_node_count
  private_network_uuid = digitalocean_vpc.this.id
  tags                 = concat([var.name], var.tags)

  maintenance_window {
    day  = "sunday"
    hour = "04:00"
  }
}

resource "digitalocean_database_db" "depot" {
  cluster_id = digitalocean_database_cluster.metadata.id
  name       = "depot"
}

resource "digitalocean_database_firewall" "metadata" {
  cluster_id = digitalocean_database_cluster.metadata.id

  rule {
    type  = "tag"
    value = digitalocean_tag.broker.name
  }
}

resource "random_id" "bucket" {
  byte_length = 4
}

# Spaces bucket: private, versioned; Spaces encrypts objects at rest.
resource "digitalocean_spaces_bucket" "tiering" {
  name          = "${var.name}-tiering-${random_id.bucket.hex}"
  region        = local.spaces_region
  acl           = "private"
  force_destroy = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    id                                     = "expire-old-versions"
    enabled                                = true
    abort_incomplete_multipart_upload_days = 7

    noncurrent_version_expiration {
      days = var.bucket_noncurrent_version_days
    }
  }
}

# A key that can read and write this bucket and nothing else.
resource "digitalocean_spaces_key" "broker" {
  name = "${var.name}-broker"

  grant {
    bucket     = digitalocean_spaces_bucket.tiering.name
    permission = "readwrite"
  }
}
