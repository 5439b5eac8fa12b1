node "cp" {
  role    = "server"
  count   = 2
  storage = "sd"
  ip      = "192.168.1.${10 + count.index}/24"
}
