//go:build !linux

package sign

// TerminalPrompt asks for a passphrase only on Linux; elsewhere a key
// with one signs through ssh-agent.
func TerminalPrompt(string) ([]byte, error) { return nil, ErrNoTerminal }
