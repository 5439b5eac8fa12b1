# A highly available cluster: three servers running embedded etcd (the
# first one founds it with cluster-init) and four agents.
#
#   export K3S_TOKEN=$(openssl rand -hex 32) K3S_AGENT_TOKEN=$(openssl rand -hex 32)
#   pibake plan recipes/examples/ha.hcl

cluster {
  name            = "ha"
  token           = env("K3S_TOKEN")
  agent_token     = env("K3S_AGENT_TOKEN")
  k3s_version     = "v1.31.4+k3s1"
  server_ip       = "10.0.10.11"
  flannel_backend = "wireguard-native"
  tls_san         = ["k3s.ha.example"]
  # ca = "generate" would have pibake make the cluster CA: every joiner
  # pins it and the build writes out/ha.kubeconfig (README: Cluster
  # identity). Off by default until seen working against a real k3s.
}

defaults {
  gateway  = "10.0.10.1"
  dns      = ["10.0.10.1", "1.1.1.1"]
  ssh      = true
  storage  = "ssd"
  timezone = "UTC"
  # ops logs in with your SSH key (the first of ~/.ssh/id_ed25519.pub,
  # id_ecdsa.pub, id_rsa.pub); list keys instead for a team.
  user {
    name                = "ops"
    ssh_authorized_keys = ssh_public_keys()
  }
}

node "ha-server" {
  role  = "server"
  count = 3
  ip    = "${cidrhost("10.0.10.0/24", 11 + count.index)}/24"
  taints = ["node-role.lab.example/control-plane=true:NoSchedule"]
  hardware {
    cpus      = 4
    memory_gb = 8
  }
}

node "ha-agent" {
  role   = "agent"
  count  = 4
  ip     = "${cidrhost("10.0.10.0/24", 21 + count.index)}/24"
  labels = { tier = "worker" }
  apt {
    modules_extra = true
  }
}
