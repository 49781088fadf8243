# Depot on AWS: an odd number of brokers spread over availability zones, each
# with its own encrypted EBS data volume; RDS PostgreSQL for metadata; an S3
# bucket for tiering; an application load balancer on 4444. Files:
#   network.tf   VPC, subnets, NAT, flow logs
#   security.tf  KMS key, security groups, the brokers' IAM role
#   data.tf      secrets, RDS, S3
#   lb.tf        load balancer
#   main.tf      the brokers themselves (this file)

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_ami" "al2023" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["al2023-ami-2023.*-kernel-*-${var.architecture}"]
  }

  filter {
    name   = "architecture"
    values = [var.architecture]
  }
}

locals {
  region     = data.aws_region.current.id
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  zones = var.availability_zones

  api_port     = 4444
  cluster_port = 6222
  db_port      = 5432

  tags = merge(var.tags, {
    "depot:cluster" = var.name
    "managed-by"    = "terraform"
  })

  # Broker i (1-based) lives in zone (i-1) mod zones, at a fixed private address,
  # so every node's peer list is known before any node exists.
  nodes = {
    for i in range(1, var.node_count + 1) : i => {
      zone_index = (i - 1) % length(local.zones)
      zone       = local.zones[(i - 1) % length(local.zones)]
      private_ip = cidrhost(aws_subnet.private[(i - 1) % length(local.zones)].cidr_block, 10 + floor((i - 1) / length(local.zones)))
    }
  }

  peers = [for id, n in local.nodes : { id = id, host = n.private_ip }]

  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.al2023[0].id
}

resource "aws_ebs_volume" "data" {
  for_each = local.nodes

  availability_zone = each.value.zone
  size              = var.data_volume_size_gb
  type              = "gp3"
  iops              = var.data_volume_iops
  encrypted         = true
  kms_key_id        = aws_kms_key.this.arn

  tags = merge(local.tags, {
    Name              = "${var.name}-data-${each.key}"
    "depot:node-id"   = tostring(each.key)
    "depot:snapshots" = var.name
  })
}

module "node_config" {
  source   = "../node-config"
  for_each = local.nodes

  node_id    = each.key
  cluster_id = var.name
  peers      = local.peers

  # Nitro instances expose an EBS volume as NVMe; its serial is the volume id without the dash.
  volume_device     = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(aws_ebs_volume.data[each.key].id, "-", "")}"
  volume_filesystem = "xfs"

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256

  # The instance profile allows reading this one secret; the AWS CLI ships with Amazon Linux 2023.
  secrets_command = "aws secretsmanager get-secret-value --region ${local.region} --secret-id ${aws_secretsmanager_secret.node.arn} --query SecretString --output text"

  tiering = {
    bucket   = aws_s3_bucket.tiering.id
    endpoint = "https://s3.${local.region}.amazonaws.com"
    region   = local.region
  }
}

resource "aws_instance" "broker" {
  for_each = local.nodes

  ami                    = local.ami_id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.private[each.value.zone_index].id
  private_ip             = each.value.private_ip
  vpc_security_group_ids = [aws_security_group.broker.id]
  iam_instance_profile   = aws_iam_instance_profile.broker.name
  key_name               = var.ssh_key_name
  ebs_optimized          = true
  monitoring             = true

  user_data                   = module.node_config[each.key].user_data
  user_data_replace_on_change = false

  # IMDSv2 only, and not reachable from containers one hop further.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.this.arn
    delete_on_termination = true
  }

  tags = merge(local.tags, {
    Name            = "${var.name}-broker-${each.key}"
    "depot:node-id" = tostring(each.key)
  })

  lifecycle {
    # A new image or binary reaches a broker only when it is replaced, one at a
    # time (docs/deploy.md, rolling upgrade); a plain apply never restarts them all.
    ignore_changes = [ami, user_data]
  }

  # Nodes boot once their secret (with the database address in it) exists.
  depends_on = [aws_secretsmanager_secret_version.node, aws_iam_role_policy.broker]
}

resource "aws_volume_attachment" "data" {
  for_each = local.nodes

  device_name                    = "/dev/sdf"
  volume_id                      = aws_ebs_volume.data[each.key].id
  instance_id                    = aws_instance.broker[each.key].id
  stop_instance_before_detaching = true
}

# --- Daily snapshots of the data volumes ---------------------------------------

data "aws_iam_policy_document" "dlm_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["dlm.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "dlm" {
  count = var.volume_snapshot_retention_days > 0 ? 1 : 0

  name_prefix        = "${var.name}-dlm-"
  assume_role_policy = data.aws_iam_policy_document.dlm_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "dlm" {
  count = var.volume_snapshot_retention_days > 0 ? 1 : 0

  role       = aws_iam_role.dlm[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"
}

data "aws_iam_policy_document" "dlm_kms" {
  statement {
    actions   = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncrypt*"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role_policy" "dlm_kms" {
  count = var.volume_snapshot_retention_days > 0 ? 1 : 0

  name   = "use-cluster-key"
  role   = aws_iam_role.dlm[0].id
  policy = data.aws_iam_policy_document.dlm_kms.json
}

resource "aws_dlm_lifecycle_policy" "data" {
  count = var.volume_snapshot_retention_days > 0 ? 1 : 0

  description        = "Depot ${var.name}: daily data volume snapshots"
  execution_role_arn = aws_iam_role.dlm[0].arn
  state              = "ENABLED"

  policy_details {
    resource_types = ["VOLUME"]

    schedule {
      name      = "daily"
      copy_tags = true

      create_rule {
        interval      = 24
        interval_unit = "HOURS"
        times         = ["02:00"]
      }

      retain_rule {
        count = var.volume_snapshot_retention_days
      }
    }

    target_tags = {
      "depot:snapshots" = var.name
    }
  }

  tags = local.tags
}
