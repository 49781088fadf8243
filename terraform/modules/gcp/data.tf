# Secrets, the Postgres metadata store and the tiering bucket.

# --- Secrets: generated here, stored in Secret Manager, read by the nodes -----

resource "random_password" "cluster_secret" {
  length  = 64
  special = false
}

resource "random_password" "jwt_secret" {
  length  = 64
  special = false
}

resource "random_password" "db" {
  length  = 40
  special = false
}

resource "random_password" "admin" {
  length  = 32
  special = false
}

resource "google_secret_manager_secret" "node" {
  project   = var.project_id
  secret_id = "${var.name}-node-env"
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region

        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "node" {
  secret = google_secret_manager_secret.node.id
  secret_data = join("\n", [
    "DEPOT_CLUSTER_SECRET=${random_password.cluster_secret.result}",
    "DEPOT_JWT_SECRET=${random_password.jwt_secret.result}",
    "DEPOT_METADATA_URL=postgres://${google_sql_user.depot.name}:${random_password.db.result}@${google_sql_database_instance.metadata.private_ip_address}:${local.db_port}/${google_sql_database.depot.name}?sslmode=require",
    "DEPOT_ADMIN_PASSWORD=${random_password.admin.result}",
    # Interoperability (HMAC) credentials of the brokers' service account, for GCS's S3 endpoint.
    "AWS_ACCESS_KEY_ID=${google_storage_hmac_key.broker.access_id}",
    "AWS_SECRET_ACCESS_KEY=${google_storage_hmac_key.broker.secret}",
    "",
  ])
}

resource "google_secret_manager_secret_iam_member" "broker" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.node.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.broker.email}"
}

# --- Metadata store: Cloud SQL PostgreSQL, private IP only, TLS only ----------

resource "google_sql_database_instance" "metadata" {
  #checkov:skip=CKV_GCP_6:TLS is enforced (ssl_mode ENCRYPTED_ONLY) and the instance has only a private IP that the egress firewall opens to the brokers alone; client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would add a per-node certificate to issue and rotate, with no client-certificate support in Depot's metadata URL.
  #checkov:skip=CKV_GCP_79:The major version is var.db_version (default POSTGRES_16, POSTGRES_18 allowed); moving to a new major is an upgrade the operator schedules (docs/deploy.md), and defaulting to the newest one breaks applies where Cloud SQL does not offer it yet.
  project             = var.project_id
  name                = "${var.name}-metadata"
  region              = var.region
  database_version    = var.db_version
  deletion_protection = var.deletion_protection
  encryption_key_name = var.kms_key_name

  settings {
    edition                     = "ENTERPRISE"
    tier                        = var.db_tier
    availability_type           = var.db_high_availability ? "REGIONAL" : "ZONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.this.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "03:00"
      location                       = var.region
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = var.db_backup_retention_count
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.this]
}

resource "google_sql_database" "depot" {
  project  = var.project_id
  name     = "depot"
  instance = google_sql_database_instance.metadata.name
}

resource "google_sql_user" "depot" {
  project  = var.project_id
  name     = "depot"
  instance = google_sql_database_instance.metadata.name
  password = random_password.db.result
}

# --- Tiering bucket: private, versioned, S3-interoperable through HMAC keys ---

resource "random_id" "bucket" {
  byte_length = 4
}

resource "google_storage_bucket" "tiering" {
  project                     = var.project_id
  name                        = "${var.name}-tiering-${random_id.bucket.hex}"
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.bucket_noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.bucket_access_log_bucket == null ? [] : [var.bucket_access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = "${var.name}-tiering"
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_storage_bucket_iam_member" "broker" {
  bucket = google_storage_bucket.tiering.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.broker.email}"
}

resource "google_storage_hmac_key" "broker" {
  project               = var.project_id
  service_account_email = google_service_account.broker.email
}
