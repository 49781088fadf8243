# Depot on GCP: an odd number of brokers spread over zones, each with its own
# persistent data disk; Cloud SQL PostgreSQL on a private IP for metadata; a GCS
# bucket for tiering, used through its S3-interoperable endpoint with HMAC keys;
# a regional external Application Load Balancer on 4444. Files:
#   network.tf   VPC, subnets, NAT, private services access, firewall
#   data.tf      secrets, Cloud SQL, bucket, HMAC key
#   lb.tf        load balancer and Cloud Armor policy
#   main.tf      the brokers themselves (this file)

locals {
  api_port     = 4444
  cluster_port = 6222
  db_port      = 5432

  labels = merge(var.labels, {
    depot-cluster = var.name
    managed-by    = "terraform"
  })

  apis = [
    "compute.googleapis.com",
    "sqladmin.googleapis.com",
    "servicenetworking.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]

  # Broker i (1-based) lives in zone (i-1) mod zones.
  nodes = {
    for i in range(1, var.node_count + 1) : i => {
      zone = var.zones[(i - 1) % length(var.zones)]
    }
  }

  used_zones = distinct([for n in local.nodes : n.zone])

  peers = [for id, n in local.nodes : { id = id, host = google_compute_address.broker[id].address }]

  # Reads the secret with the VM's service account token from the metadata
  # server. The token goes to curl through a root-only file, not the command line.
  secrets_command = <<-EOT
    header=$(mktemp)
    trap 'rm -f "$header"' EXIT
    token=$(curl -fsS -H 'Metadata-Flavor: Google' 'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
    printf 'Authorization: Bearer %s\n' "$token" > "$header"
    curl -fsS -H @"$header" 'https://secretmanager.googleapis.com/v1/projects/${var.project_id}/secrets/${google_secret_manager_secret.node.secret_id}/versions/latest:access' | python3 -c 'import base64, json, sys; sys.stdout.write(base64.b64decode(json.load(sys.stdin)["payload"]["data"]).decode())'
  EOT
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# The brokers' identity: reads its one secret, uses the bucket (through HMAC
# keys of this account), nothing else.
resource "google_service_account" "broker" {
  project      = var.project_id
  account_id   = "${var.name}-broker"
  display_name = "Depot ${var.name} brokers"

  depends_on = [google_project_service.this]
}

# Fixed internal addresses, reserved before the VMs so that every node's peer list is known.
resource "google_compute_address" "broker" {
  for_each = local.nodes

  project      = var.project_id
  name         = "${var.name}-broker-${each.key}"
  region       = var.region
  subnetwork   = google_compute_subnetwork.brokers.id
  address_type = "INTERNAL"
}

resource "google_compute_resource_policy" "snapshots" {
  count = var.disk_snapshot_retention_days > 0 ? 1 : 0

  project = var.project_id
  name    = "${var.name}-data-snapshots"
  region  = var.region

  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = "02:00"
      }
    }

    retention_policy {
      max_retention_days    = var.disk_snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }

    snapshot_properties {
      labels            = local.labels
      storage_locations = [var.region]
    }
  }
}

resource "google_compute_disk" "data" {
  for_each = local.nodes

  project           = var.project_id
  name              = "${var.name}-data-${each.key}"
  zone              = each.value.zone
  type              = var.data_disk_type
  size              = var.data_disk_size_gb
  labels            = merge(local.labels, { depot-node-id = tostring(each.key) })
  resource_policies = var.disk_snapshot_retention_days > 0 ? [google_compute_resource_policy.snapshots[0].self_link] : []

  dynamic "disk_encryption_key" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_self_link = disk_encryption_key.value
    }
  }
}

module "node_config" {
  source   = "../node-config"
  for_each = local.nodes

  node_id    = each.key
  cluster_id = var.name
  peers      = local.peers

  # attached_disk.device_name below gives this stable path.
  volume_device     = "/dev/disk/by-id/google-depot-data"
  volume_filesystem = "ext4"

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  secrets_command = local.secrets_command

  tiering = {
    bucket   = google_storage_bucket.tiering.name
    endpoint = "https://storage.googleapis.com"
    region   = "auto"
  }
}

resource "google_compute_instance" "broker" {
  for_each = local.nodes

  project                   = var.project_id
  name                      = "${var.name}-broker-${each.key}"
  zone                      = each.value.zone
  machine_type              = var.machine_type
  allow_stopping_for_update = true
  can_ip_forward            = false
  labels                    = merge(local.labels, { depot-node-id = tostring(each.key) })

  boot_disk {
    auto_delete       = true
    kms_key_self_link = var.kms_key_name

    initialize_params {
      image = var.image
      size  = var.boot_disk_size_gb
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source            = google_compute_disk.data[each.key].self_link
    device_name       = "depot-data"
    mode              = "READ_WRITE"
    kms_key_self_link = var.kms_key_name
  }

  # No access_config: no public IP. Egress goes through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.brokers.id
    network_ip = google_compute_address.broker[each.key].address
  }

  service_account {
    email  = google_service_account.broker.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    user-data              = module.node_config[each.key].user_data
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
  }

  lifecycle {
    # A new image or binary reaches a broker only when it is replaced, one at a
    # time (docs/deploy.md, rolling upgrade); a plain apply never restarts them all.
    ignore_changes = [metadata["user-data"], boot_disk[0].initialize_params[0].image]
  }

  # Nodes boot once their secret (with the database address in it) is readable.
  depends_on = [
    google_secret_manager_secret_version.node,
    google_secret_manager_secret_iam_member.broker,
    google_storage_bucket_iam_member.broker,
    google_compute_router_nat.this,
  ]
}
