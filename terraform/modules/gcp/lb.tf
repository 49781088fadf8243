# Regional external Application Load Balancer: HTTPS on 4444 in front of the
# brokers' port 4444. The backend timeout outlasts the longest long poll (20 s);
# brokers take traffic only while /readyz answers 200.

resource "google_compute_instance_group" "brokers" {
  for_each = toset(local.used_zones)

  project   = var.project_id
  name      = "${var.name}-brokers-${each.key}"
  zone      = each.key
  network   = google_compute_network.this.id
  instances = [for id, n in local.nodes : google_compute_instance.broker[id].self_link if n.zone == each.key]

  named_port {
    name = "depot-api"
    port = local.api_port
  }
}

resource "google_compute_region_health_check" "api" {
  project             = var.project_id
  name                = "${var.name}-readyz"
  region              = var.region
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3

  http_health_check {
    port         = local.api_port
    request_path = "/readyz"
  }

  log_config {
    enable = true
  }
}

resource "google_compute_region_security_policy" "api" {
  project     = var.project_id
  name        = "${var.name}-api"
  region      = var.region
  description = "Depot ${var.name}: which client networks reach the API"
  type        = "CLOUD_ARMOR"
}

resource "google_compute_region_security_policy_rule" "allow_clients" {
  project         = var.project_id
  region          = var.region
  security_policy = google_compute_region_security_policy.api.name
  description     = "Allowed client networks"
  priority        = 1000
  action          = "allow"

  match {
    versioned_expr = "SRC_IPS_V1"
    config {
      src_ip_ranges = var.api_allowed_cidrs
    }
  }
}

resource "google_compute_region_security_policy_rule" "deny_others" {
  project         = var.project_id
  region          = var.region
  security_policy = google_compute_region_security_policy.api.name
  description     = "Everyone else"
  priority        = 2000
  action          = "deny(403)"

  match {
    versioned_expr = "SRC_IPS_V1"
    config {
      src_ip_ranges = ["*"]
    }
  }
}

resource "google_compute_region_backend_service" "api" {
  project               = var.project_id
  name                  = "${var.name}-api"
  region                = var.region
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTP"
  port_name             = "depot-api"
  timeout_sec           = var.lb_timeout_seconds
  health_checks         = [google_compute_region_health_check.api.id]
  security_policy       = google_compute_region_security_policy.api.self_link

  dynamic "backend" {
    for_each = google_compute_instance_group.brokers
    content {
      group           = backend.value.self_link
      balancing_mode  = "UTILIZATION"
      capacity_scaler = 1.0
    }
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

resource "google_compute_region_url_map" "api" {
  project         = var.project_id
  name            = "${var.name}-api"
  region          = var.region
  default_service = google_compute_region_backend_service.api.id
}

resource "google_compute_region_ssl_policy" "api" {
  project         = var.project_id
  name            = "${var.name}-api"
  region          = var.region
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_region_target_https_proxy" "api" {
  project          = var.project_id
  name             = "${var.name}-api"
  region           = var.region
  url_map          = google_compute_region_url_map.api.id
  ssl_certificates = var.ssl_certificate_ids
  ssl_policy       = google_compute_region_ssl_policy.api.id
}

resource "google_compute_address" "api" {
  project      = var.project_id
  name         = "${var.name}-api"
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "STANDARD"
}

resource "google_compute_forwarding_rule" "api" {
  project               = var.project_id
  name                  = "${var.name}-api"
  region                = var.region
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  port_range            = tostring(local.api_port)
  target                = google_compute_region_target_https_proxy.api.id
  network               = google_compute_network.this.id
  ip_address            = google_compute_address.api.address
  network_tier          = "STANDARD"

  depends_on = [google_compute_subnetwork.proxy]
}
