output "api_endpoint" {
  description = "Base URL of the Depot API (HTTPS on 4444, through the load balancer)."
  value       = "https://${coalesce(var.api_hostname, google_compute_address.api.address)}:${local.api_port}"
}

output "load_balancer_ip" {
  description = "External IP of the load balancer: point api_hostname (an A record) at it."
  value       = google_compute_address.api.address
}

output "bucket_name" {
  description = "GCS bucket that holds tiered segments."
  value       = google_storage_bucket.tiering.name
}

output "bucket_endpoint" {
  description = "S3-interoperable endpoint the brokers use for tiering (with the HMAC key in the secret)."
  value       = "https://storage.googleapis.com"
}

output "database_host" {
  description = "Private IP of the Cloud SQL PostgreSQL metadata store (reachable from the brokers only)."
  value       = google_sql_database_instance.metadata.private_ip_address
}

output "database_port" {
  description = "Port of the metadata store."
  value       = local.db_port
}

output "database_name" {
  description = "Database (and user) name Depot uses in the metadata store."
  value       = google_sql_database.depot.name
}

output "database_instance" {
  description = "Cloud SQL instance name, for backups and restores."
  value       = google_sql_database_instance.metadata.name
}

output "secret_id" {
  description = "Secret Manager secret holding every broker's environment (cluster secret, JWT secret, metadata URL, first admin password, HMAC key). The value is never an output."
  value       = google_secret_manager_secret.node.id
}

output "admin_password_command" {
  description = "Command that prints the password of the first `admin` user, for someone allowed to read the secret."
  value       = "gcloud secrets versions access latest --project ${var.project_id} --secret ${google_secret_manager_secret.node.secret_id} | sed -n 's/^DEPOT_ADMIN_PASSWORD=//p'"
}

output "service_account_email" {
  description = "Service account the brokers run as."
  value       = google_service_account.broker.email
}

output "peers" {
  description = "The `--peers` value every broker runs with (node id = internal address : cluster port)."
  value       = join(",", [for p in local.peers : "${p.id}=${p.host}:${local.cluster_port}"])
}

output "nodes" {
  description = "Per broker: instance name, zone, internal IP and data disk, keyed by node id."
  value = {
    for id, n in local.nodes : id => {
      instance     = google_compute_instance.broker[id].name
      zone         = n.zone
      private_ip   = google_compute_address.broker[id].address
      data_disk    = google_compute_disk.data[id].name
      api_addr     = "${google_compute_address.broker[id].address}:${local.api_port}"
      cluster_addr = "${google_compute_address.broker[id].address}:${local.cluster_port}"
    }
  }
}

output "network" {
  description = "VPC network the cluster runs in."
  value       = google_compute_network.this.id
}
