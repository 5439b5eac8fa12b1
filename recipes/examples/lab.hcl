# A home lab: one k3s server and two agents on a 192.168.1.0/24 LAN.
#
#   pibake plan  recipes/examples/lab.hcl
#   pibake build recipes/examples/lab.hcl
#
# No token is set: `pibake build` generates one and keeps it in the output
# directory, so rebuilt nodes still join.

cluster {
  name        = "lab"
  k3s_channel = "stable"
}

defaults {
  ssh      = true
  timezone = "Europe/Berlin"
  storage  = "ssd"
  apt {
    packages = ["vim", "htop"]
  }
  # Log in as pi with your SSH key: ssh_public_keys() is the first of
  # ~/.ssh/id_ed25519.pub, id_ecdsa.pub and id_rsa.pub. With none, nobody
  # can log in (validate warns, naming ssh-keygen); the nodes still join.
  user {
    ssh_authorized_keys = ssh_public_keys()
  }
}

node "pi-server" {
  role    = "server"
  ip      = "192.168.1.10/24"
  gateway = "192.168.1.1"
  dns     = ["192.168.1.1"]
  hardware {
    cpus      = 4
    memory_gb = 8
  }
}

node "pi-agent" {
  role   = "agent"
  count  = 2
  labels = { zone = "shed" }
}
