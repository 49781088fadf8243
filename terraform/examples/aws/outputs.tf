output "api_endpoint" {
  description = "Base URL of the Depot API."
  value       = module.depot.api_endpoint
}

output "load_balancer_dns_name" {
  description = "Point api_hostname at this name (CNAME or alias)."
  value       = module.depot.load_balancer_dns_name
}

output "bucket_name" {
  description = "S3 bucket of tiered segments."
  value       = module.depot.bucket_name
}

output "database_host" {
  description = "Private hostname of the metadata store."
  value       = module.depot.database_host
}

output "secret_arn" {
  description = "Secrets Manager secret with the brokers' environment."
  value       = module.depot.secret_arn
}

output "admin_password_command" {
  description = "Prints the first admin password."
  value       = module.depot.admin_password_command
}

output "nodes" {
  description = "Brokers by node id."
  value       = module.depot.nodes
}

output "load_balancer_zone_id" {
  description = "Route 53 zone of the load balancer, for an alias record."
  value       = module.depot.load_balancer_zone_id
}

output "bucket_endpoint" {
  description = "S3 endpoint of the bucket."
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

output "peers" {
  description = "The --peers value of the brokers."
  value       = module.depot.peers
}

output "kms_key_arn" {
  description = "KMS key encrypting the cluster's data at rest."
  value       = module.depot.kms_key_arn
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.depot.vpc_id
}
