terraform {
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # Terraform state holds the generated secrets: keep it in an encrypted,
  # access-controlled backend, for example a GCS bucket:
  # backend "gcs" {
  #   bucket = "my-terraform-state"
  #   prefix = "depot"
  # }
}
