output "image_id" {
  description = "The custom image the hosts run."
  value       = contabo_image.mailbake.id
}

output "instance_ids" {
  description = "Contabo instance id of each host, by host name."
  value       = { for name, instance in contabo_instance.host : name => instance.id }
}
