# mailbake's fleet on Contabo: one custom image, one instance per host of the site.
# Written by `mailbake terraform` next to mailbake.auto.tfvars.json, which gives the values
# (the image's URL and digest, each host's name and cloud-init user-data). The same module
# for every site: what differs is only in the variables.

terraform {
  required_version = ">= 1.3"
  required_providers {
    contabo = {
      source = "contabo/contabo"
      # 0.1.42 sends user_data on a reinstall only when it changed; the user-data names the
      # image's digest, so a new image always changes both (see variables.tf).
      version = ">= 0.1.42"
    }
  }
}

# The provider downloads the image from its URL. The URL names the image's digest, so a
# new image is a new URL, and a new URL (ForceNew) a new contabo_image.
resource "contabo_image" "mailbake" {
  name        = var.image.name
  description = var.image.description
  image_url   = var.image.url
  os_type     = "Linux"
  version     = var.image.version

  # The instances move to the new image before the old one is deleted.
  lifecycle {
    create_before_destroy = true
  }
}

# A new image_id or user_data reinstalls the instance: hosts are immutable, the seed
# re-creates their identity and secrets. Mail still queued on a host is lost then: drain
# it first.
#
# Deleting a contabo_instance (0.1.42) calls CancelInstance: the VPS contract is cancelled,
# its addresses (and the PTR records set on them) go back to Contabo. A host removed from
# the site, a `destroy`, or an argument that forces replacement would do that, so Terraform
# must refuse to plan it; retiring a host is a deliberate step of its own (docs/terraform.md).
resource "contabo_instance" "host" {
  for_each = var.hosts

  display_name         = each.value.display_name
  image_id             = contabo_image.mailbake.id
  user_data            = var.user_data[each.key]
  existing_instance_id = lookup(var.existing_instance_ids, each.key, null)
  ssh_keys             = var.ssh_key_secret_ids
  product_id           = var.product_id
  region               = var.region
  period               = var.period

  lifecycle {
    prevent_destroy = true
  }
}
