# A dedicated VPC: the brokers' subnet (no public IPs; Cloud NAT for egress),
# the proxy-only subnet of the regional load balancer, and a private services
# range for Cloud SQL. A custom VPC denies all ingress until a rule allows it.

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.this]
}

resource "google_compute_subnetwork" "brokers" {
  project                  = var.project_id
  name                     = "${var.name}-brokers"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "proxy" {
  project       = var.project_id
  name          = "${var.name}-lb-proxies"
  region        = var.region
  network       = google_compute_network.this.id
  ip_cidr_range = var.proxy_subnet_cidr
  purpose       = "REGIONAL_MANAGED_PROXY"
  role          = "ACTIVE"
}

resource "google_compute_router" "this" {
  project = var.project_id
  name    = var.name
  region  = var.region
  network = google_compute_network.this.id
}

# Egress for the binary download and OS packages; the brokers have no public IP.
resource "google_compute_router_nat" "this" {
  project                            = var.project_id
  name                               = var.name
  region                             = var.region
  router                             = google_compute_router.this.name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.brokers.self_link
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Private services access: Cloud SQL gets an address inside this range, reachable only from the VPC.
resource "google_compute_global_address" "private_services" {
  project       = var.project_id
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.database_peering_prefix_length
  network       = google_compute_network.this.id
}

resource "google_service_networking_connection" "this" {
  network                 = google_compute_network.this.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
  deletion_policy         = "ABANDON"
}

# --- Firewall ------------------------------------------------------------------

# The load balancer's proxies and Google's health checkers reach the API port.
resource "google_compute_firewall" "lb_to_brokers" {
  project     = var.project_id
  name        = "${var.name}-lb-to-brokers"
  network     = google_compute_network.this.id
  description = "Depot API (4444) from the load balancer's proxy-only subnet and Google health checkers"
  direction   = "INGRESS"
  priority    = 1000

  source_ranges           = [var.proxy_subnet_cidr, "35.191.0.0/16", "130.211.0.0/22"]
  target_service_accounts = [google_service_account.broker.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.api_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "broker_to_broker" {
  project     = var.project_id
  name        = "${var.name}-broker-to-broker"
  network     = google_compute_network.this.id
  description = "Depot cluster traffic (6222) and API (4444) only between brokers"
  direction   = "INGRESS"
  priority    = 1000

  source_service_accounts = [google_service_account.broker.email]
  target_service_accounts = [google_service_account.broker.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.cluster_port), tostring(local.api_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "ssh" {
  count = length(var.ssh_allowed_cidrs) > 0 ? 1 : 0

  project     = var.project_id
  name        = "${var.name}-ssh"
  network     = google_compute_network.this.id
  description = "SSH to the brokers from the allowlisted networks only"
  direction   = "INGRESS"
  priority    = 1000

  source_ranges           = var.ssh_allowed_cidrs
  target_service_accounts = [google_service_account.broker.email]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Cloud SQL sits outside the VPC's firewall, so its port is fenced on the way
# out: only the brokers may open connections to Postgres in the private range.
resource "google_compute_firewall" "postgres_from_brokers" {
  project     = var.project_id
  name        = "${var.name}-postgres-from-brokers"
  network     = google_compute_network.this.id
  description = "Postgres (5432) to the metadata store, from the brokers"
  direction   = "EGRESS"
  priority    = 900

  destination_ranges      = ["${google_compute_global_address.private_services.address}/${var.database_peering_prefix_length}"]
  target_service_accounts = [google_service_account.broker.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.db_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "postgres_from_others" {
  project     = var.project_id
  name        = "${var.name}-postgres-from-others"
  network     = google_compute_network.this.id
  description = "Postgres (5432) to the metadata store, from anything that is not a broker: denied"
  direction   = "EGRESS"
  priority    = 1000

  destination_ranges = ["${google_compute_global_address.private_services.address}/${var.database_peering_prefix_length}"]

  deny {
    protocol = "tcp"
    ports    = [tostring(local.db_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
