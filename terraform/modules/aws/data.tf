# Secrets, the Postgres metadata store and the tiering bucket.

# --- Secrets: generated here, stored in Secrets Manager, read by the nodes ----

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

resource "aws_secretsmanager_secret" "node" {
  #checkov:skip=CKV2_AWS_57:Depot's cluster and JWT secrets are shared by every node and must change together in a rolling restart; there is no rotation Lambda for them. Rotation is the documented procedure in docs/deploy.md.
  name_prefix             = "depot/${var.name}/node-"
  description             = "Depot ${var.name}: environment of every broker (cluster secret, JWT secret, metadata URL, first admin password)"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7

  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "node" {
  secret_id = aws_secretsmanager_secret.node.id
  secret_string = join("\n", [
    "DEPOT_CLUSTER_SECRET=${random_password.cluster_secret.result}",
    "DEPOT_JWT_SECRET=${random_password.jwt_secret.result}",
    "DEPOT_METADATA_URL=postgres://${aws_db_instance.metadata.username}:${random_password.db.result}@${aws_db_instance.metadata.address}:${aws_db_instance.metadata.port}/${aws_db_instance.metadata.db_name}?sslmode=require",
    "DEPOT_ADMIN_PASSWORD=${random_password.admin.result}",
    "",
  ])
}

# --- Metadata store: RDS PostgreSQL, private, encrypted, TLS only -------------

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  description = "Depot ${var.name} metadata store"
  subnet_ids  = aws_subnet.private[*].id

  tags = local.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${var.db_engine_version}-"
  family      = "postgres${var.db_engine_version}"
  description = "Depot ${var.name}: TLS required, connection and slow query logging"

  parameter {
    name         = "rds.force_ssl"
    value        = "1"
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name_prefix        = "${var.name}-rds-mon-"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "metadata" {
  identifier_prefix = "${var.name}-"
  engine            = "postgres"
  engine_version    = var.db_engine_version
  instance_class    = var.db_instance_class

  db_name  = "depot"
  username = "depot"
  password = random_password.db.result
  port     = local.db_port

  allocated_storage     = var.db_allocated_storage_gb
  max_allocated_storage = var.db_max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this.arn

  multi_az               = var.db_multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name

  iam_database_authentication_enabled = true
  auto_minor_version_upgrade          = true
  allow_major_version_upgrade         = false
  backup_retention_period             = var.db_backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-metadata-final"
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7

  tags = local.tags

  depends_on = [aws_iam_role_policy_attachment.rds_monitoring]
}

# --- Tiering bucket: private, encrypted, versioned, TLS only ------------------

resource "aws_s3_bucket" "tiering" {
  #checkov:skip=CKV2_AWS_62:Depot tracks tiered segments through its Raft catalog and needs no S3 event notifications; nothing consumes them.
  #checkov:skip=CKV_AWS_144:Cross-region replication needs a second bucket in another region and doubles storage; it is a disaster-recovery choice left to the operator (docs/deploy.md). The bucket is versioned and KMS-encrypted in the meantime.
  bucket_prefix = "${var.name}-tiering-"
  force_destroy = false

  tags = local.tags
}

resource "aws_s3_bucket_ownership_controls" "tiering" {
  bucket = aws_s3_bucket.tiering.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "tiering" {
  bucket                  = aws_s3_bucket.tiering.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "tiering" {
  bucket = aws_s3_bucket.tiering.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "tiering" {
  bucket = aws_s3_bucket.tiering.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "tiering" {
  bucket = aws_s3_bucket.tiering.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.bucket_noncurrent_version_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.tiering]
}

data "aws_iam_policy_document" "tiering_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.tiering.arn,
      "${aws_s3_bucket.tiering.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tiering" {
  bucket = aws_s3_bucket.tiering.id
  policy = data.aws_iam_policy_document.tiering_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.tiering]
}

resource "aws_s3_bucket_logging" "tiering" {
  count = var.bucket_access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.tiering.id
  target_bucket = var.bucket_access_log_bucket
  target_prefix = "s3/${var.name}-tiering/"
}
