# An edge fleet: one server and 100 agents with static addresses, joining
# in batches of 25 so the server is not swamped by 100 joins at once.
#
#   export K3S_TOKEN=$(openssl rand -hex 32)
#   pibake plan recipes/examples/fleet.hcl

cluster {
  name             = "fleet"
  token            = env("K3S_TOKEN")
  agent_join_batch = 25
  cluster_cidr     = "10.42.0.0/16"
}

defaults {
  gateway = "172.20.0.1"
  dns     = ["172.20.0.1"]
  ssh     = true
  # Log in as pi with your SSH key: ssh_public_keys() is the first of
  # ~/.ssh/id_ed25519.pub, id_ecdsa.pub and id_rsa.pub. With none, nobody
  # can log in (validate warns, naming ssh-keygen); the nodes still join.
  user {
    ssh_authorized_keys = ssh_public_keys()
  }
}

node "edge-server" {
  role    = "server"
  ip      = "172.20.0.10/16"
  storage = "ssd"
  hardware {
    cpus      = 4
    memory_gb = 8
  }
}

node "edge" {
  role     = "agent"
  count    = 100
  hostname = format("edge-%03d", count.index + 1)
  ip       = "${cidrhost("172.20.1.0/24", 10 + count.index)}/16"
  labels   = { site = "store-${floor(count.index / 25) + 1}" }
  taints   = ["dedicated=edge:NoSchedule"]
}
