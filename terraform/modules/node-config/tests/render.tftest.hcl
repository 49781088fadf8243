# What a node gets on its VM, asserted on the rendered text. Runs offline:
# the module has no providers.

variables {
  cluster_id = "prod"
  node_id    = 2
  peers = [
    { id = 3, host = "10.42.12.10" },
    { id = 1, host = "10.42.10.10" },
    { id = 2, host = "10.42.11.10" },
  ]
  volume_device   = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
  binary_url      = "https://downloads.example.com/depot/0.1.0/depot-x86_64-linux"
  binary_sha256   = "5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d"
  secrets_command = "aws secretsmanager get-secret-value --region eu-west-1 --secret-id arn:aws:secretsmanager:eu-west-1:123456789012:secret:depot --query SecretString --output text"
}

run "three_node_config" {
  command = apply

  assert {
    condition     = output.peers == "1=10.42.10.10:6222,2=10.42.11.10:6222,3=10.42.12.10:6222"
    error_message = "peers must be id=host:6222 for every broker, ordered by id: got ${output.peers}"
  }

  assert {
    condition     = output.wait_for == 3
    error_message = "wait_for must default to the number of peers"
  }

  assert {
    condition     = strcontains(output.config_toml, "\nnode_id = 2\n")
    error_message = "config must carry this node's id"
  }

  assert {
    condition     = strcontains(output.config_toml, "\ncluster_id = \"prod\"\n")
    error_message = "config must carry the cluster id, the same on every node (a new node refuses to start without one)"
  }

  assert {
    condition     = strcontains(output.config_toml, "peers = \"1=10.42.10.10:6222,2=10.42.11.10:6222,3=10.42.12.10:6222\"")
    error_message = "config must carry the peers string"
  }

  assert {
    condition     = strcontains(output.config_toml, "listen = \"0.0.0.0:4444\"") && strcontains(output.config_toml, "cluster_listen = \"0.0.0.0:6222\"")
    error_message = "config must listen on 4444 (API) and 6222 (cluster)"
  }

  assert {
    condition     = strcontains(output.config_toml, "data_dir = \"/var/lib/depot/data\"") && output.data_dir == "/var/lib/depot/data"
    error_message = "the data dir must be on the mounted volume"
  }

  assert {
    condition     = strcontains(output.config_toml, "wait_for = 3")
    error_message = "config must carry wait_for"
  }

  assert {
    condition     = !strcontains(output.config_toml, "[tiering]") && !strcontains(output.config_toml, "metadata_url")
    error_message = "tiering and metadata_url are left out when not given"
  }

  assert {
    condition     = !can(regex("(?i)(secret|password)\\s*=", output.config_toml))
    error_message = "the config file must never hold a secret"
  }
}

run "systemd_unit" {
  command = apply

  assert {
    condition     = output.exec_start == "/usr/local/bin/depot serve --config /etc/depot/depot.toml --wait-for 3"
    error_message = "ExecStart must run depot serve with the config and --wait-for set to the node count: got ${output.exec_start}"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "ExecStart=/usr/local/bin/depot serve --config /etc/depot/depot.toml --wait-for 3\n")
    error_message = "the unit must carry the ExecStart line"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "\nRestart=always\n") && strcontains(output.systemd_unit, "\nRestartSec=5\n")
    error_message = "the unit must restart the broker"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "\nStartLimitIntervalSec=0\n")
    error_message = "the unit must never stop retrying"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "\nUser=depot\n") && strcontains(output.systemd_unit, "\nNoNewPrivileges=yes\n") && strcontains(output.systemd_unit, "\nProtectSystem=strict\n")
    error_message = "the broker must run unprivileged and sandboxed"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "\nRequiresMountsFor=/var/lib/depot/data\n") && strcontains(output.systemd_unit, "\nReadWritePaths=/var/lib/depot/data\n")
    error_message = "the broker must wait for the data volume and write only there"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "\nEnvironmentFile=/run/depot/secrets.env\n") && strcontains(output.systemd_unit, "\nRequires=depot-secrets.service\n")
    error_message = "secrets must come from depot-secrets.service through an environment file"
  }

  assert {
    condition     = strcontains(output.secrets_unit, "ExecStart=/usr/local/lib/depot/fetch-secrets") && strcontains(output.secrets_unit, "PartOf=depot.service")
    error_message = "depot-secrets.service must fetch the secrets again whenever depot restarts"
  }

  assert {
    condition     = strcontains(output.systemd_unit, "StandardOutput=append:/var/log/depot/depot.log")
    error_message = "the broker must log to /var/log/depot, which logrotate rotates"
  }
}

run "log_rotation" {
  command = apply

  assert {
    condition     = startswith(output.logrotate_config, "/var/log/depot/*.log {")
    error_message = "logrotate must cover /var/log/depot"
  }

  assert {
    condition = alltrue([for line in ["daily", "rotate 14", "maxsize 100M", "compress", "copytruncate", "missingok"] :
    strcontains(output.logrotate_config, "    ${line}\n")])
    error_message = "logrotate must rotate daily, keep 14, cap size, compress and copytruncate"
  }
}

run "binary_checksum" {
  command = apply

  assert {
    condition     = strcontains(output.install_script, "url='https://downloads.example.com/depot/0.1.0/depot-x86_64-linux'")
    error_message = "the install script must download from binary_url"
  }

  assert {
    condition     = strcontains(output.install_script, "expected='5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d'")
    error_message = "the install script must carry the expected SHA-256"
  }

  assert {
    condition     = strcontains(output.install_script, "sha256sum --check --strict")
    error_message = "the install script must check the SHA-256 before installing"
  }

  assert {
    condition     = strcontains(output.install_script, "--proto '=https'")
    error_message = "downloads (redirects included) must stay on https"
  }

  assert {
    condition     = strcontains(output.install_script, "exit 1\nfi\n\ninstall -o root -g root -m 0755")
    error_message = "the binary is installed only after the check passed"
  }
}

run "volume_mount" {
  command = apply

  assert {
    condition     = strcontains(output.volume_script, "device='/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0'")
    error_message = "the volume script must use the given device"
  }

  assert {
    condition     = strcontains(output.volume_script, "if ! blkid \"$real\"") && strcontains(output.volume_script, "mkfs -t \"$fstype\" -L depot-data")
    error_message = "a blank volume gets a filesystem, and only a blank one"
  }

  assert {
    condition     = strcontains(output.volume_script, "$mount_point $fstype defaults,noatime,nofail")
    error_message = "the volume must be mounted through fstab so it comes back after a reboot"
  }

  assert {
    condition     = strcontains(output.volume_script, "mount_point='/var/lib/depot'") && strcontains(output.volume_script, "install -d -o depot -g depot -m 0750 \"$data_dir\"")
    error_message = "the data dir must be created on the volume, owned by depot"
  }
}

run "cloud_init_document" {
  command = apply

  assert {
    condition     = startswith(output.user_data, "#cloud-config\n")
    error_message = "user data must be a cloud-config document"
  }

  assert {
    condition = toset([for f in yamldecode(output.user_data).write_files : f.path]) == toset([
      "/etc/depot/depot.toml",
      "/etc/systemd/system/depot.service",
      "/etc/systemd/system/depot-secrets.service",
      "/etc/logrotate.d/depot",
      "/usr/local/lib/depot/install-binary",
      "/usr/local/lib/depot/prepare-volume",
      "/usr/local/lib/depot/fetch-secrets",
      "/usr/local/lib/depot/read-secrets",
      "/usr/local/lib/depot/bootstrap",
    ])
    error_message = "cloud-init must write exactly the config, units, logrotate and scripts (no secrets file when a secret store is used)"
  }

  assert {
    condition     = yamldecode(output.user_data).runcmd == [["/usr/local/lib/depot/bootstrap"]]
    error_message = "cloud-init must run the bootstrap script"
  }

  assert {
    condition     = contains(yamldecode(output.user_data).packages, "logrotate") && contains(yamldecode(output.user_data).packages, "e2fsprogs")
    error_message = "cloud-init must install logrotate and the filesystem tools"
  }

  assert {
    condition     = yamldecode(output.user_data).ssh_pwauth == false
    error_message = "password SSH logins must be off"
  }

  assert {
    condition     = one([for f in yamldecode(output.user_data).write_files : f.content if f.path == "/etc/systemd/system/depot.service"]) == output.systemd_unit
    error_message = "the unit in the user data must be the rendered unit"
  }

  assert {
    condition     = strcontains(one([for f in yamldecode(output.user_data).write_files : f.content if f.path == "/usr/local/lib/depot/read-secrets"]), "aws secretsmanager get-secret-value")
    error_message = "read-secrets must run the secrets command"
  }

  assert {
    condition     = alltrue([for f in yamldecode(output.user_data).write_files : f.permissions == "0700" if startswith(f.path, "/usr/local/lib/depot/") && strcontains(f.path, "secrets")])
    error_message = "the secrets scripts must be root-only"
  }
}

run "cluster_secret_in_a_file" {
  command = apply

  assert {
    condition     = strcontains(output.config_toml, "\ncluster_secret_file = \"/run/depot/cluster-secret\"")
    error_message = "the config must name the file holding the cluster secret"
  }

  assert {
    condition     = !strcontains(output.exec_start, "secret")
    error_message = "no secret, and no secret option, on the command line: ${output.exec_start}"
  }

  assert {
    condition     = strcontains(one([for f in yamldecode(output.user_data).write_files : f.content if f.path == "/usr/local/lib/depot/fetch-secrets"]), "chown depot:depot /run/depot/cluster-secret.tmp\n    chmod 0600 /run/depot/cluster-secret.tmp\n    mv -f /run/depot/cluster-secret.tmp /run/depot/cluster-secret\n")
    error_message = "fetch-secrets must write the cluster secret to a file only depot may read"
  }

  assert {
    condition     = strcontains(one([for f in yamldecode(output.user_data).write_files : f.content if f.path == "/usr/local/lib/depot/fetch-secrets"]), "grep -v '^DEPOT_CLUSTER_SECRET=' /run/depot/secrets.read > /run/depot/secrets.env.tmp\n")
    error_message = "the environment file must leave the cluster secret out (given both ways, depot refuses to start)"
  }
}

run "five_nodes_with_tiering" {
  command = apply

  variables {
    node_id = 5
    peers   = [for i in range(1, 6) : { id = i, host = "depot-${i}.internal.example.com" }]
    tiering = {
      bucket   = "depot-tiering"
      endpoint = "https://storage.googleapis.com"
      region   = "auto"
    }
    volume_filesystem = "xfs"
  }

  assert {
    condition     = output.peers == "1=depot-1.internal.example.com:6222,2=depot-2.internal.example.com:6222,3=depot-3.internal.example.com:6222,4=depot-4.internal.example.com:6222,5=depot-5.internal.example.com:6222"
    error_message = "five DNS-named peers: got ${output.peers}"
  }

  assert {
    condition     = endswith(output.exec_start, "--wait-for 5")
    error_message = "--wait-for must follow the node count"
  }

  assert {
    condition     = strcontains(output.config_toml, "\n[tiering]\nbucket = \"depot-tiering\"\nendpoint = \"https://storage.googleapis.com\"\nregion = \"auto\"")
    error_message = "the tiering table must be rendered"
  }

  assert {
    condition     = contains(yamldecode(output.user_data).packages, "xfsprogs")
    error_message = "xfs volumes need xfsprogs"
  }
}

run "single_node_and_custom_ports" {
  command = apply

  variables {
    node_id      = 1
    peers        = [{ id = 1, host = "10.0.0.5" }]
    api_port     = 8444
    cluster_port = 7222
    metadata_url = "postgres://depot@db.internal:5432/depot?sslmode=verify-full"
  }

  assert {
    condition     = output.peers == "1=10.0.0.5:7222" && output.wait_for == 1
    error_message = "a single node is its own only peer"
  }

  assert {
    condition     = strcontains(output.config_toml, "listen = \"0.0.0.0:8444\"") && strcontains(output.config_toml, "cluster_listen = \"0.0.0.0:7222\"")
    error_message = "ports must follow the variables"
  }

  assert {
    condition     = strcontains(output.config_toml, "metadata_url = \"postgres://depot@db.internal:5432/depot?sslmode=verify-full\"")
    error_message = "a password-less metadata URL goes into the config"
  }
}

run "inline_secrets" {
  command = apply

  variables {
    secrets_command = null
    secrets_env     = "DEPOT_CLUSTER_SECRET=abc\nDEPOT_JWT_SECRET=def\n"
  }

  assert {
    condition     = one([for f in yamldecode(output.user_data).write_files : f.permissions if f.path == "/etc/depot/secrets.env"]) == "0600"
    error_message = "inline secrets must be written to a root-only file"
  }

  assert {
    condition     = strcontains(one([for f in yamldecode(output.user_data).write_files : f.content if f.path == "/usr/local/lib/depot/read-secrets"]), "cat /etc/depot/secrets.env")
    error_message = "read-secrets must read the inline secrets file"
  }
}
