terraform {
  # 1.9 lets a variable's validation refer to other variables (peers and node_id, wait_for).
  required_version = ">= 1.9.0"

  # No providers: this module only renders text, so `terraform test` runs offline.
}
