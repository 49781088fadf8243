# Renders what one Depot broker needs on its VM: the config file, the systemd
# units, the log rotation, the first-boot scripts, and the cloud-init user data
# that puts them all in place. Provider-free, so `terraform test` runs offline.

locals {
  config_path = "/etc/depot/depot.toml"
  # Written by depot-secrets.service before each start: tmpfs, readable by depot only.
  cluster_secret_path = "/run/depot/cluster-secret"
  data_dir            = "${var.mount_point}/data"
  log_dir             = "/var/log/depot"
  wait_for            = coalesce(var.wait_for, length(var.peers))

  # `--peers` format of API.md: node ids with their cluster addresses, ordered by id.
  sorted_peers = [for id in sort([for p in var.peers : format("%06d", p.id)]) : one([for p in var.peers : p if p.id == tonumber(id)])]
  peers        = join(",", [for p in local.sorted_peers : "${p.id}=${p.host}:${var.cluster_port}"])

  listen         = "${var.listen_address}:${var.api_port}"
  cluster_listen = "${var.listen_address}:${var.cluster_port}"

  # TOML: strings through jsonencode, whose escapes are valid TOML basic-string escapes.
  config_toml = join("\n", compact([
    "# Depot node ${var.node_id}: rendered by Terraform (terraform/modules/node-config). Do not edit on the VM.",
    "# Secrets are not in this file: the cluster secret is read from cluster_secret_file, and",
    "# DEPOT_JWT_SECRET, DEPOT_METADATA_URL and DEPOT_ADMIN_PASSWORD reach depot as environment,",
    "# from /run/depot/secrets.env. Both are written by depot-secrets.service before each start.",
    "node_id = ${var.node_id}",
    "cluster_id = ${jsonencode(var.cluster_id)}",
    "listen = ${jsonencode(local.listen)}",
    "cluster_listen = ${jsonencode(local.cluster_listen)}",
    "peers = ${jsonencode(local.peers)}",
    "data_dir = ${jsonencode(local.data_dir)}",
    "wait_for = ${local.wait_for}",
    "cluster_secret_file = ${jsonencode(local.cluster_secret_path)}",
    var.metadata_url == null ? "" : "metadata_url = ${jsonencode(var.metadata_url)}",
    var.tiering == null ? "" : "\n[tiering]",
    var.tiering == null ? "" : "bucket = ${jsonencode(var.tiering.bucket)}",
    var.tiering == null ? "" : "endpoint = ${jsonencode(var.tiering.endpoint)}",
    var.tiering == null ? "" : "region = ${jsonencode(var.tiering.region)}",
  ]))

  exec_start = "/usr/local/bin/depot serve --config ${local.config_path} --wait-for ${local.wait_for}"

  depot_unit = <<-EOT
    [Unit]
    Description=Depot message broker (node ${var.node_id})
    Wants=network-online.target
    After=network-online.target depot-secrets.service
    Requires=depot-secrets.service
    RequiresMountsFor=${local.data_dir}
    # Keep trying for as long as it takes: a broker that gave up helps no one.
    StartLimitIntervalSec=0

    [Service]
    Type=simple
    User=depot
    Group=depot
    EnvironmentFile=/run/depot/secrets.env
    ExecStart=${local.exec_start}
    Restart=always
    RestartSec=5
    # SIGTERM drains in-flight requests, long polls (at most 20 s) included.
    KillSignal=SIGTERM
    TimeoutStopSec=60
    LimitNOFILE=1048576
    StandardOutput=append:${local.log_dir}/depot.log
    StandardError=append:${local.log_dir}/depot.log
    NoNewPrivileges=yes
    PrivateTmp=yes
    PrivateDevices=yes
    ProtectSystem=strict
    ProtectHome=yes
    ProtectKernelTunables=yes
    ProtectKernelModules=yes
    ProtectControlGroups=yes
    RestrictSUIDSGID=yes
    ReadWritePaths=${local.data_dir}

    [Install]
    WantedBy=multi-user.target
  EOT

  secrets_unit = <<-EOT
    [Unit]
    Description=Depot secrets for node ${var.node_id}
    Wants=network-online.target
    After=network-online.target
    PartOf=depot.service

    [Service]
    Type=oneshot
    RemainAfterExit=yes
    ExecStart=/usr/local/lib/depot/fetch-secrets
    TimeoutStartSec=15min

    [Install]
    WantedBy=multi-user.target
  EOT

  logrotate = <<-EOT
    ${local.log_dir}/*.log {
        daily
        rotate ${var.log_retention_days}
        maxsize ${var.log_max_size_mb}M
        missingok
        notifempty
        compress
        delaycompress
        dateext
        # systemd holds the file open in append mode: copy it, then truncate in place.
        copytruncate
    }
  EOT

  install_binary = templatefile("${path.module}/templates/install-binary.sh.tftpl", {
    binary_url    = var.binary_url
    binary_sha256 = var.binary_sha256
  })

  prepare_volume = templatefile("${path.module}/templates/prepare-volume.sh.tftpl", {
    volume_device       = var.volume_device
    volume_filesystem   = var.volume_filesystem
    volume_wait_seconds = var.volume_wait_seconds
    mount_point         = var.mount_point
    data_dir            = local.data_dir
  })

  fetch_secrets = templatefile("${path.module}/templates/fetch-secrets.sh.tftpl", {
    attempts            = 60
    cluster_secret_path = local.cluster_secret_path
  })

  read_secrets = join("\n", [
    "#!/bin/bash",
    "# Prints this node's secrets as an environment file on stdout.",
    "set -euo pipefail",
    var.secrets_env == null ? var.secrets_command : "cat /etc/depot/secrets.env",
    "",
  ])

  bootstrap = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    node_id = var.node_id
  })

  filesystem_package = var.volume_filesystem == "xfs" ? "xfsprogs" : "e2fsprogs"

  write_files = concat(
    [
      { path = local.config_path, permissions = "0644", content = "${local.config_toml}\n" },
      { path = "/etc/systemd/system/depot.service", permissions = "0644", content = local.depot_unit },
      { path = "/etc/systemd/system/depot-secrets.service", permissions = "0644", content = local.secrets_unit },
      { path = "/etc/logrotate.d/depot", permissions = "0644", content = local.logrotate },
      { path = "/usr/local/lib/depot/install-binary", permissions = "0755", content = local.install_binary },
      { path = "/usr/local/lib/depot/prepare-volume", permissions = "0755", content = local.prepare_volume },
      { path = "/usr/local/lib/depot/fetch-secrets", permissions = "0700", content = local.fetch_secrets },
      { path = "/usr/local/lib/depot/read-secrets", permissions = "0700", content = local.read_secrets },
      { path = "/usr/local/lib/depot/bootstrap", permissions = "0755", content = local.bootstrap },
    ],
    var.secrets_env == null ? [] : [
      { path = "/etc/depot/secrets.env", permissions = "0600", content = var.secrets_env },
    ],
  )

  cloud_config = {
    package_update = true
    packages       = distinct(concat(["logrotate", local.filesystem_package], var.extra_packages))
    ssh_pwauth     = false
    disable_root   = true
    write_files    = [for f in local.write_files : merge(f, { owner = "root:root" })]
    runcmd         = [["/usr/local/lib/depot/bootstrap"]]
  }

  user_data = "#cloud-config\n${yamlencode(local.cloud_config)}"
}
