output "api_endpoint" {
  description = "Base URL of the Depot API."
  value       = module.depot.api_endpoint
}

output "load_balancer_ip" {
  description = "Point api_hostname at this address (A record)."
  value       = module.depot.load_balancer_ip
}

output "bucket_name" {
  description = "GCS bucket of tiered segments."
  value       = module.depot.bucket_name
}

output "database_host" {
  description = "Private IP of the metadata store."
  value       = module.depot.database_host
}

output "secret_id" {
  description = "Secret Manager secret with the brokers' environment."
  value       = module.depot.secret_id
}

output "admin_password_command" {
  description = "Prints the first admin password."
  value       = module.depot.admin_password_command
}

output "nodes" {
  description = "Brokers by node id."
  value       = module.depot.nodes
}

output "bucket_endpoint" {
  description = "S3-interoperable endpoint of the bucket."
  value       = module.depot.bucket_endpoint
}

output "database_port" {
  description = "Port of the metadata store."
  value       = module.depot.database_port
}

output "database_name" {
  description = "Database Depot uses."
  value       = module.depot.database_name
}

output "database_instance" {
  description = "Cloud SQL instance of the metadata store."
  value       = module.depot.database_instance
}

output "peers" {
  description = "The --peers value of the brokers."
  value       = module.depot.peers
}

output "service_account_email" {
  description = "Service account of the brokers."
  value       = module.depot.service_account_email
}

output "network" {
  description = "VPC network of the cluster."
  value       = module.depot.network
}
