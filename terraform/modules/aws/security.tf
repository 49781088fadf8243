# One customer-managed key encrypts everything at rest: EBS volumes, RDS
# storage and Performance Insights, the S3 bucket, the secret and the logs.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is a KMS key policy: its Resource "*" means this one key, and the account statement is AWS's required default that lets IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_356:This is a KMS key policy: its Resource "*" means this one key, not every resource.
  #checkov:skip=CKV_AWS_109:This is a KMS key policy: the account root statement is what delegates key permissions to IAM; without it the key becomes unmanageable.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncrypt"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/depot/${var.name}/*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Depot ${var.name}: encryption at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/depot-${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# --- Security groups -------------------------------------------------------

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "Depot ${var.name} load balancer: API clients in on 4444, brokers out on 4444"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-lb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "broker" {
  name_prefix = "${var.name}-broker-"
  description = "Depot ${var.name} brokers: API from the load balancer, cluster traffic only between brokers"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-broker" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "Depot ${var.name} metadata store: Postgres from the brokers only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_api" {
  for_each = toset(var.api_allowed_cidrs)

  security_group_id = aws_security_group.lb.id
  description       = "API clients (HTTPS) from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = local.api_port
  to_port           = local.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "lb_to_brokers" {
  security_group_id            = aws_security_group.lb.id
  description                  = "Requests and /readyz health checks to the brokers"
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_api_from_lb" {
  security_group_id            = aws_security_group.broker.id
  description                  = "API and health checks from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_api_from_brokers" {
  security_group_id            = aws_security_group.broker.id
  description                  = "API between brokers (operators on one node calling another)"
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_cluster" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Cluster traffic (Raft, forwarding) only from other brokers"
  ip_protocol                  = "tcp"
  from_port                    = local.cluster_port
  to_port                      = local.cluster_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_ssh" {
  for_each = toset(var.ssh_allowed_cidrs)

  security_group_id = aws_security_group.broker.id
  description       = "SSH from the allowlisted network ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "broker_cluster" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Cluster traffic to other brokers"
  ip_protocol                  = "tcp"
  from_port                    = local.cluster_port
  to_port                      = local.cluster_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "broker_api" {
  security_group_id            = aws_security_group.broker.id
  description                  = "API calls to other brokers"
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "broker_db" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Postgres metadata store"
  ip_protocol                  = "tcp"
  from_port                    = local.db_port
  to_port                      = local.db_port
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_egress_rule" "broker_https" {
  security_group_id = aws_security_group.broker.id
  description       = "HTTPS: binary download, OS packages, AWS APIs (Secrets Manager, S3, SSM)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "db_from_brokers" {
  security_group_id            = aws_security_group.db.id
  description                  = "Postgres only from the brokers"
  ip_protocol                  = "tcp"
  from_port                    = local.db_port
  to_port                      = local.db_port
  referenced_security_group_id = aws_security_group.broker.id
}

# --- Broker identity: an instance profile, no static keys ---------------------

data "aws_iam_policy_document" "broker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "broker" {
  name_prefix        = "${var.name}-broker-"
  assume_role_policy = data.aws_iam_policy_document.broker_assume.json

  tags = local.tags
}

data "aws_iam_policy_document" "broker" {
  statement {
    sid       = "ReadOwnSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.node.arn]
  }

  statement {
    sid       = "ListTieringBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.tiering.arn]
  }

  statement {
    sid       = "UseTieringObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.tiering.arn}/*"]
  }

  statement {
    sid       = "UseClusterKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role_policy" "broker" {
  name   = "depot-broker"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker.json
}

resource "aws_iam_role_policy_attachment" "broker_ssm" {
  count = var.enable_ssm_session_manager ? 1 : 0

  role       = aws_iam_role.broker.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "broker" {
  name_prefix = "${var.name}-broker-"
  role        = aws_iam_role.broker.name

  tags = local.tags
}
