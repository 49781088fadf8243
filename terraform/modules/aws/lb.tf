# Application load balancer: HTTPS on 4444 in front of the brokers' port 4444.
# The idle timeout outlasts the longest long poll (20 s); targets are healthy
# only while /readyz answers 200 (leader known, metadata store reachable).

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_76:The WAF web ACL is optional and operator-supplied (var.waf_web_acl_arn), with its own managed rule groups; Depot is a Rust program with no Java or Log4j to shield.
  name                       = "${var.name}-api"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.lb.id]
  idle_timeout               = var.lb_idle_timeout_seconds
  drop_invalid_header_fields = true
  desync_mitigation_mode     = "strictest"
  enable_deletion_protection = var.deletion_protection

  dynamic "access_logs" {
    for_each = var.lb_access_log_bucket == null ? [] : [var.lb_access_log_bucket]
    content {
      bucket  = access_logs.value
      prefix  = "alb/${var.name}"
      enabled = true
    }
  }

  tags = local.tags
}

resource "aws_lb_target_group" "api" {
  name                 = "${var.name}-api"
  port                 = local.api_port
  protocol             = "HTTP"
  target_type          = "instance"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 30

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_target_group_attachment" "api" {
  for_each = local.nodes

  target_group_arn = aws_lb_target_group.api.arn
  target_id        = aws_instance.broker[each.key].id
  port             = local.api_port
}

resource "aws_lb_listener" "api" {
  load_balancer_arn = aws_lb.api.arn
  port              = local.api_port
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  tags = local.tags
}

resource "aws_wafv2_web_acl_association" "api" {
  count = var.waf_web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.api.arn
  web_acl_arn  = var.waf_web_acl_arn
}
