output "api_endpoint" {
  description = "Base URL of the Depot API."
  value       = module.depot.api_endpoint
}

output "bucket_name" {
  description = "Spaces bucket of tiered segments."
  value       = module.depot.bucket_name
}

output "database_host" {
  description = "Private hostname of the metadata store."
  value       = module.depot.database_host
}

output "admin_password" {
  description = "First admin password: terraform output -raw admin_password."
  value       = module.depot.admin_password
  sensitive   = true
}

output "nodes" {
  description = "Brokers by node id."
  value       = module.depot.nodes
}

output "load_balancer_ip" {
  description = "Public IP of the load balancer."
  value       = module.depot.load_balancer_ip
}

output "bucket_endpoint" {
  description = "Spaces endpoint of the bucket."
  value       = module.depot.bucket_endpoint
}

output "database_port" {
  description = "Port of the metadata store (25060)."
  value       = module.depot.database_port
}

output "database_name" {
  description = "Database Depot uses."
  value       = module.depot.database_name
}

output "database_cluster_id" {
  description = "Managed PostgreSQL cluster of the metadata store."
  value       = module.depot.database_cluster_id
}

output "peers" {
  description = "The --peers value of the brokers."
  value       = module.depot.peers
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.depot.vpc_id
}
