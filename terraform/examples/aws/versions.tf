terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # Terraform state holds the generated secrets: keep it in an encrypted,
  # access-controlled backend, for example S3 with a KMS key:
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "depot/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}
