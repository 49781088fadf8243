# Depot on DigitalOcean: an odd number of brokers, each with its own block
# storage volume for the data dir; Managed PostgreSQL on the VPC for metadata;
# a Spaces bucket for tiering; a load balancer on 4444.
#
# DigitalOcean has no availability zones inside a region and no secret store:
#  - brokers are spread over the region's hypervisors by DigitalOcean, not over zones;
#  - secrets reach each broker through its user data (Droplet metadata, served
#    only to that Droplet on 169.254.169.254) and land in a root-only file.
# docs/deploy.md spells out both trade-offs.

locals {
  api_port     = 4444
  cluster_port = 6222

  broker_tag    = "${var.name}-broker"
  spaces_region = coalesce(var.spaces_region, var.region)
  api_fqdn      = "${var.api_subdomain}.${var.domain}"

  nodes = { for i in range(1, var.node_count + 1) : i => {
    record = "${var.name}-node-${i}"
  } }

  # Droplets cannot be given a private address up front, so brokers find each
  # other by DNS names whose records Terraform points at the private addresses.
  peers = [for id, n in local.nodes : { id = id, host = "${n.record}.${var.domain}" }]

  # The metadata URL uses the cluster's own admin user: on PostgreSQL 15 and later a
  # user added through DigitalOcean's API may not create tables in the database,
  # and Terraform cannot reach the private database to grant it (docs/deploy.md).
  secrets_env = join("\n", [
    "DEPOT_CLUSTER_SECRET=${random_password.cluster_secret.result}",
    "DEPOT_JWT_SECRET=${random_password.jwt_secret.result}",
    "DEPOT_METADATA_URL=postgres://${digitalocean_database_cluster.metadata.user}:${digitalocean_database_cluster.metadata.password}@${digitalocean_database_cluster.metadata.private_host}:${digitalocean_database_cluster.metadata.port}/${digitalocean_database_db.depot.name}?sslmode=require",
    "DEPOT_ADMIN_PASSWORD=${random_password.admin.result}",
    "AWS_ACCESS_KEY_ID=${digitalocean_spaces_key.broker.access_key}",
    "AWS_SECRET_ACCESS_KEY=${digitalocean_spaces_key.broker.secret_key}",
    "",
  ])
}

resource "random_password" "cluster_secret" {
  length  = 64
  special = false
}

resource "random_password" "jwt_secret" {
  length  = 64
  special = false
}

resource "random_password" "admin" {
  length  = 32
  special = false
}

resource "digitalocean_tag" "broker" {
  name = local.broker_tag
}

resource "digitalocean_vpc" "this" {
  name        = var.name
  region      = var.region
  ip_range    = var.vpc_ip_range
  description = "Depot ${var.name}: brokers and metadata store"
}

resource "digitalocean_volume" "data" {
  for_each = local.nodes

  # No initial filesystem: the broker's first boot creates it and mounts it at the data dir
  # (DigitalOcean would otherwise mount a pre-formatted volume under /mnt as well).
  name        = "${var.name}-data-${each.key}"
  region      = var.region
  size        = var.volume_size_gb
  description = "Depot ${var.name}: data dir of broker ${each.key}"
  tags        = concat([var.name], var.tags)
}

module "node_config" {
  source   = "../node-config"
  for_each = local.nodes

  node_id    = each.key
  cluster_id = var.name
  peers      = local.peers

  volume_device     = "/dev/disk/by-id/scsi-0DO_Volume_${digitalocean_volume.data[each.key].name}"
  volume_filesystem = "ext4"

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  secrets_env = local.secrets_env

  tiering = {
    bucket   = digitalocean_spaces_bucket.tiering.name
    endpoint = "https://${local.spaces_region}.digitaloceanspaces.com"
    region   = local.spaces_region
  }
}

resource "digitalocean_droplet" "broker" {
  #checkov:skip=CKV_DIO_2:ssh_keys is var.ssh_key_ids, a required input whose validation demands at least one key; checkov cannot resolve a required list variable that has no default and reports it as empty.
  for_each = local.nodes

  name              = "${var.name}-broker-${each.key}"
  region            = var.region
  size              = var.droplet_size
  image             = var.image
  vpc_uuid          = digitalocean_vpc.this.id
  ssh_keys          = var.ssh_key_ids
  volume_ids        = [digitalocean_volume.data[each.key].id]
  user_data         = module.node_config[each.key].user_data
  tags              = concat([digitalocean_tag.broker.name], var.tags)
  monitoring        = true
  ipv6              = false
  graceful_shutdown = true

  lifecycle {
    # A new image or binary reaches a broker only when it is replaced, one at a
    # time (docs/deploy.md, rolling upgrade); a plain apply never restarts them all.
    ignore_changes = [user_data, image]
  }

  # The database firewall must admit the broker tag before brokers first connect.
  depends_on = [digitalocean_database_firewall.metadata]
}

# One private record per broker: the names in every broker's peer list.
resource "digitalocean_record" "broker" {
  for_each = local.nodes

  domain = var.domain
  type   = "A"
  name   = each.value.record
  value  = digitalocean_droplet.broker[each.key].ipv4_address_private
  ttl    = 60
}

# Inbound: the API from the load balancer and other brokers, cluster traffic
# from other brokers only, SSH only from the allowlist (closed by default).
resource "digitalocean_firewall" "broker" {
  name = "${var.name}-broker"
  tags = [digitalocean_tag.broker.name]

  inbound_rule {
    protocol                  = "tcp"
    port_range                = tostring(local.api_port)
    source_load_balancer_uids = [digitalocean_loadbalancer.api.id]
  }

  inbound_rule {
    protocol    = "tcp"
    port_range  = tostring(local.api_port)
    source_tags = [digitalocean_tag.broker.name]
  }

  inbound_rule {
    protocol    = "tcp"
    port_range  = tostring(local.cluster_port)
    source_tags = [digitalocean_tag.broker.name]
  }

  dynamic "inbound_rule" {
    for_each = length(var.ssh_allowed_cidrs) > 0 ? [var.ssh_allowed_cidrs] : []
    content {
      protocol         = "tcp"
      port_range       = "22"
      source_addresses = inbound_rule.value
    }
  }

  # Outbound: binary download, OS packages, Spaces, the database, other brokers, DNS, NTP.
  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "53"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "123"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

resource "digitalocean_project_resources" "this" {
  count = var.project_id == null ? 0 : 1

  project = var.project_id
  resources = concat(
    [for d in digitalocean_droplet.broker : d.urn],
    [for v in digitalocean_volume.data : v.urn],
    [digitalocean_loadbalancer.api.urn, digitalocean_database_cluster.metadata.urn],
  )
}
