terraform {
  required_version = ">= 1.9.0"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = ">= 2.44, < 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # Terraform state holds the generated secrets: keep it in an encrypted,
  # access-controlled backend (for example a private Spaces bucket through the
  # "s3" backend), never on a laptop or in git.
}
