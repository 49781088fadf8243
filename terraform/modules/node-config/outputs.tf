output "user_data" {
  description = "cloud-init user data (#cloud-config) for this node; it carries the secrets when secrets_env is used."
  value       = local.user_data
  sensitive   = true
}

output "config_toml" {
  description = "The depot config file written to /etc/depot/depot.toml (no secrets)."
  value       = local.config_toml
}

output "config_path" {
  description = "Where the config file lives on the VM."
  value       = local.config_path
}

output "peers" {
  description = "The `--peers` value: node ids with their cluster addresses, ordered by id."
  value       = local.peers
}

output "wait_for" {
  description = "The `--wait-for` value used by the systemd unit."
  value       = local.wait_for
}

output "data_dir" {
  description = "The node's data dir, on its own persistent volume."
  value       = local.data_dir
}

output "exec_start" {
  description = "The command line systemd runs."
  value       = local.exec_start
}

output "systemd_unit" {
  description = "depot.service."
  value       = local.depot_unit
}

output "secrets_unit" {
  description = "depot-secrets.service, which loads the secrets before each start."
  value       = local.secrets_unit
}

output "logrotate_config" {
  description = "/etc/logrotate.d/depot."
  value       = local.logrotate
}

output "install_script" {
  description = "The script that downloads the binary and checks its SHA-256."
  value       = local.install_binary
}

output "volume_script" {
  description = "The script that formats (when blank) and mounts the data volume."
  value       = local.prepare_volume
}

output "files" {
  description = "Every file cloud-init writes, by path: its mode and content (the secrets file too, when secrets_env is used), for provisioning without cloud-init and for tests."
  value       = { for f in local.write_files : f.path => { permissions = f.permissions, content = f.content } }
  sensitive   = true
}
