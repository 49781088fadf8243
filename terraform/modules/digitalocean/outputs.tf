output "api_endpoint" {
  description = "Base URL of the Depot API (HTTPS on 4444, through the load balancer)."
  value       = "https://${local.api_fqdn}:${local.api_port}"
}

output "load_balancer_ip" {
  description = "Public IP of the load balancer (the API record points at it)."
  value       = digitalocean_loadbalancer.api.ip
}

output "bucket_name" {
  description = "Spaces bucket that holds tiered segments."
  value       = digitalocean_spaces_bucket.tiering.name
}

output "bucket_endpoint" {
  description = "S3-compatible Spaces endpoint the brokers use for tiering."
  value       = "https://${local.spaces_region}.digitaloceanspaces.com"
}

output "database_host" {
  description = "Private hostname of the managed PostgreSQL metadata store (reachable from the brokers only)."
  value       = digitalocean_database_cluster.metadata.private_host
}

output "database_port" {
  description = "Port of the metadata store (DigitalOcean's managed PostgreSQL listens on 25060)."
  value       = digitalocean_database_cluster.metadata.port
}

output "database_name" {
  description = "Database Depot uses in the metadata store."
  value       = digitalocean_database_db.depot.name
}

output "database_cluster_id" {
  description = "ID of the managed PostgreSQL cluster, for backups and restores."
  value       = digitalocean_database_cluster.metadata.id
}

output "admin_password" {
  description = "Password of the first `admin` user (DigitalOcean has no secret store to read it from). Read it with `terraform output -raw admin_password`."
  value       = random_password.admin.result
  sensitive   = true
}

output "peers" {
  description = "The `--peers` value every broker runs with (node id = private DNS name : cluster port)."
  value       = join(",", [for p in local.peers : "${p.id}=${p.host}:${local.cluster_port}"])
}

output "nodes" {
  description = "Per broker: Droplet id, private IP, DNS name and data volume, keyed by node id."
  value = {
    for id, n in local.nodes : id => {
      droplet_id   = digitalocean_droplet.broker[id].id
      private_ip   = digitalocean_droplet.broker[id].ipv4_address_private
      hostname     = "${n.record}.${var.domain}"
      volume_id    = digitalocean_volume.data[id].id
      api_addr     = "${n.record}.${var.domain}:${local.api_port}"
      cluster_addr = "${n.record}.${var.domain}:${local.cluster_port}"
    }
  }
}

output "vpc_id" {
  description = "VPC the cluster runs in."
  value       = digitalocean_vpc.this.id
}
