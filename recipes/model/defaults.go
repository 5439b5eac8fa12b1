package model

// Defaults for settings a recipe may leave out.
const (
	DefaultK3sChannel       = "stable"
	DefaultFlannelBackend   = "vxlan"
	DefaultClusterCIDR      = "10.42.0.0/16"
	DefaultServiceCIDR      = "10.43.0.0/16"
	DefaultInstallScriptURL = "https://get.k3s.io"
	DefaultAgentJoinBatch   = 50
)
