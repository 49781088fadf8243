# Inputs that would build a broken or unsafe node are refused at plan time.

variables {
  cluster_id = "prod"
  node_id    = 1
  peers = [
    { id = 1, host = "10.0.1.10" },
    { id = 2, host = "10.0.2.10" },
    { id = 3, host = "10.0.3.10" },
  ]
  volume_device   = "/dev/disk/by-id/google-depot-data"
  binary_url      = "https://downloads.example.com/depot"
  binary_sha256   = "5f2b9c0e4d6a8b1c3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d"
  secrets_command = "cat /dev/null"
}

run "even_node_count_is_refused" {
  command = plan
  variables {
    peers = [{ id = 1, host = "10.0.1.10" }, { id = 2, host = "10.0.2.10" }]
  }
  expect_failures = [var.peers]
}

run "duplicate_peer_ids_are_refused" {
  command = plan
  variables {
    peers = [{ id = 1, host = "10.0.1.10" }, { id = 1, host = "10.0.2.10" }, { id = 3, host = "10.0.3.10" }]
  }
  expect_failures = [var.peers]
}

run "peer_host_with_port_is_refused" {
  command = plan
  variables {
    peers = [{ id = 1, host = "10.0.1.10:6222" }]
  }
  expect_failures = [var.peers]
}

run "node_outside_peers_is_refused" {
  command = plan
  variables {
    node_id = 4
  }
  expect_failures = [var.node_id]
}

run "cluster_id_with_spaces_is_refused" {
  command = plan
  variables {
    cluster_id = "my cluster"
  }
  expect_failures = [var.cluster_id]
}

run "plain_http_binary_is_refused" {
  command = plan
  variables {
    binary_url = "http://downloads.example.com/depot"
  }
  expect_failures = [var.binary_url]
}

run "malformed_checksum_is_refused" {
  command = plan
  variables {
    binary_sha256 = "5F2B"
  }
  expect_failures = [var.binary_sha256]
}

run "wait_for_above_node_count_is_refused" {
  command = plan
  variables {
    wait_for = 4
  }
  expect_failures = [var.wait_for]
}

run "password_in_metadata_url_is_refused" {
  command = plan
  variables {
    metadata_url = "postgres://depot:hunter2@db.internal:5432/depot"
  }
  expect_failures = [var.metadata_url]
}

run "no_secrets_source_is_refused" {
  command = plan
  variables {
    secrets_command = null
  }
  expect_failures = [var.secrets_command]
}

run "same_port_twice_is_refused" {
  command = plan
  variables {
    cluster_port = 4444
  }
  expect_failures = [var.cluster_port]
}

run "unknown_filesystem_is_refused" {
  command = plan
  variables {
    volume_filesystem = "btrfs"
  }
  expect_failures = [var.volume_filesystem]
}
