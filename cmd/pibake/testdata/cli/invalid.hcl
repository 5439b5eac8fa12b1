cluster {
  token = "too-short"
}

node "pi-server" {
  role = "server"
  ip   = "192.168.1.10"
}

node "pi-agent" {
  role  = "worker"
  count = 2
}
