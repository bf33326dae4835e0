# Written by `mailbake terraform` (mailbake.auto.tfvars.json): do not set these by hand.

variable "image" {
  description = "The mailbake disk image: where the provider downloads it, and its sha256 as version."
  type = object({
    name        = string
    description = string
    url         = string
    version     = string
  })
}

variable "hosts" {
  description = "The site's hosts, by host name: what may be shown (the user-data is apart, and secret)."
  type = map(object({
    display_name = string
  }))
}

variable "user_data" {
  description = "Each host's cloud-init user-data, by host name: its seed, naming the image's digest. It carries password hashes and private keys."
  type        = map(string)
  sensitive   = true
}

# Yours to set, in your own .tfvars or module block: mailbake does not know them.

variable "existing_instance_ids" {
  description = "Contabo instance ids of hosts that already exist, by host name: they are reinstalled, not ordered."
  type        = map(string)
  default     = {}
}

variable "ssh_key_secret_ids" {
  description = "Contabo secret ids of SSH keys for the provider's default user (the seed already sets up the operator's keys)."
  type        = list(number)
  default     = []
}

variable "product_id" {
  description = "Contabo product of new instances, e.g. V45; null: the provider's default."
  type        = string
  default     = null
}

variable "region" {
  description = "Region of new instances (EU, US-central, US-east, US-west, SIN); null: the provider's default."
  type        = string
  default     = null
}

variable "period" {
  description = "Contract period of new instances in months (1, 3, 6, 12); null: the provider's default."
  type        = number
  default     = null
}
