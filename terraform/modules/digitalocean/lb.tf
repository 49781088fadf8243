# Load balancer: HTTPS on 4444 in front of the brokers' port 4444, inside the
# VPC. The idle timeout outlasts the longest long poll (20 s); brokers take
# traffic only while /readyz answers 200.

resource "digitalocean_certificate" "api" {
  count = var.certificate_name == null ? 1 : 0

  name    = "${var.name}-api"
  type    = "lets_encrypt"
  domains = [local.api_fqdn]

  lifecycle {
    create_before_destroy = true
  }
}

resource "digitalocean_loadbalancer" "api" {
  name        = "${var.name}-api"
  region      = var.region
  size_unit   = var.lb_size_unit
  vpc_uuid    = digitalocean_vpc.this.id
  droplet_tag = digitalocean_tag.broker.name

  http_idle_timeout_seconds        = var.lb_idle_timeout_seconds
  redirect_http_to_https           = false
  disable_lets_encrypt_dns_records = true

  forwarding_rule {
    entry_protocol   = "https"
    entry_port       = local.api_port
    target_protocol  = "http"
    target_port      = local.api_port
    certificate_name = var.certificate_name != null ? var.certificate_name : digitalocean_certificate.api[0].name
  }

  healthcheck {
    protocol                 = "http"
    port                     = local.api_port
    path                     = "/readyz"
    check_interval_seconds   = 10
    response_timeout_seconds = 5
    healthy_threshold        = 2
    unhealthy_threshold      = 3
  }

  firewall {
    allow = [for c in var.api_allowed_cidrs : "cidr:${c}"]
  }
}

resource "digitalocean_record" "api" {
  domain = var.domain
  type   = "A"
  name   = var.api_subdomain
  value  = digitalocean_loadbalancer.api.ip
  ttl    = 300
}
