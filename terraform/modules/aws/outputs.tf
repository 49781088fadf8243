output "api_endpoint" {
  description = "Base URL of the Depot API (HTTPS on 4444, through the load balancer)."
  value       = "https://${coalesce(var.api_hostname, aws_lb.api.dns_name)}:${local.api_port}"
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer: point api_hostname (a CNAME or alias record) at it."
  value       = aws_lb.api.dns_name
}

output "load_balancer_zone_id" {
  description = "Route 53 hosted zone id of the load balancer, for an alias record."
  value       = aws_lb.api.zone_id
}

output "bucket_name" {
  description = "S3 bucket that holds tiered segments."
  value       = aws_s3_bucket.tiering.id
}

output "bucket_endpoint" {
  description = "S3 endpoint the brokers use for tiering."
  value       = "https://s3.${local.region}.amazonaws.com"
}

output "database_host" {
  description = "Private hostname of the RDS PostgreSQL metadata store (reachable from the brokers only)."
  value       = aws_db_instance.metadata.address
}

output "database_port" {
  description = "Port of the metadata store."
  value       = aws_db_instance.metadata.port
}

output "database_name" {
  description = "Database (and user) name Depot uses in the metadata store."
  value       = aws_db_instance.metadata.db_name
}

output "secret_arn" {
  description = "ARN of the Secrets Manager secret holding every broker's environment (cluster secret, JWT secret, metadata URL, first admin password). The value is never an output."
  value       = aws_secretsmanager_secret.node.arn
}

output "admin_password_command" {
  description = "Command that prints the password of the first `admin` user, for someone allowed to read the secret."
  value       = "aws secretsmanager get-secret-value --region ${local.region} --secret-id ${aws_secretsmanager_secret.node.arn} --query SecretString --output text | sed -n 's/^DEPOT_ADMIN_PASSWORD=//p'"
}

output "peers" {
  description = "The `--peers` value every broker runs with (node id = private address : cluster port)."
  value       = join(",", [for p in local.peers : "${p.id}=${p.host}:${local.cluster_port}"])
}

output "nodes" {
  description = "Per broker: instance id, availability zone, private IP and data volume id, keyed by node id."
  value = {
    for id, n in local.nodes : id => {
      instance_id    = aws_instance.broker[id].id
      zone           = n.zone
      private_ip     = n.private_ip
      data_volume_id = aws_ebs_volume.data[id].id
      api_addr       = "${n.private_ip}:${local.api_port}"
      cluster_addr   = "${n.private_ip}:${local.cluster_port}"
    }
  }
}

output "kms_key_arn" {
  description = "KMS key that encrypts volumes, database, bucket, secret and logs."
  value       = aws_kms_key.this.arn
}

output "vpc_id" {
  description = "VPC the cluster runs in."
  value       = aws_vpc.this.id
}
