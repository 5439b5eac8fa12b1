package sign

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/testimage"
)

const principal = "ci@example.org"

// keygen makes a key with ssh-keygen and returns its private key path.
func keygen(t *testing.T, dir, name, passphrase string, args ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	out, err := testimage.Run(t, "ssh-keygen", append([]string{"-q", "-N", passphrase, "-C", name, "-f", p}, args...)...)
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", name, err, out)
	}
	return p
}

// allowedSigners writes an allowed_signers file listing the keys.
func allowedSigners(t *testing.T, dir string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func allowedLine(t *testing.T, pubPath string) string {
	t.Helper()
	b, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	return principal + " " + strings.TrimSpace(string(b))
}

// keygenVerify runs `ssh-keygen -Y verify` on file and its .sig.
func keygenVerify(t *testing.T, allowed, file string) (string, error) {
	t.Helper()
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command(testimage.Tool(t, "ssh-keygen"), "-Y", "verify", "-f", allowed, "-I", principal, "-n", Namespace, "-s", file+SigSuffix)
	cmd.Stdin = in
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func flipByte(t *testing.T, path string, at func(n int) int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at(len(b))] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flipSignatureByte flips a bit in the signature bytes inside the blob
// (its last bytes), keeping the armor valid.
func flipSignatureByte(t *testing.T, sigPath string) {
	t.Helper()
	b, err := os.ReadFile(sigPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dearmor(b)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-3] ^= 0x01
	if err := os.WriteFile(sigPath, armor(raw), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSignVerifiedBySSHKeygen signs with keys of every kind, from files
// with and without a passphrase, and has ssh-keygen -Y verify check each
// signature; a flipped byte in the file or in the signature fails it.
func TestSignVerifiedBySSHKeygen(t *testing.T) {
	tests := []struct {
		name, passphrase string
		args             []string
	}{
		{name: "ed25519", args: []string{"-t", "ed25519"}},
		{name: "ecdsa", passphrase: "correct horse battery", args: []string{"-t", "ecdsa", "-b", "384"}},
		{name: "rsa", passphrase: "rsa pass phrase", args: []string{"-t", "rsa", "-b", "3072"}},
		{name: "ed25519-pem", args: []string{"-t", "ed25519", "-m", "PKCS8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			key := keygen(t, dir, "id_"+tt.name, tt.passphrase, tt.args...)
			asked := 0
			s, err := Load(key, func(q string) ([]byte, error) {
				asked++
				return []byte(tt.passphrase), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.passphrase != ""]; asked != want {
				t.Errorf("the passphrase was asked %d times; want %d", asked, want)
			}
			file := filepath.Join(dir, "SHA256SUMS")
			if err := os.WriteFile(file, []byte("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  pi-server.img\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := File(s, file); err != nil {
				t.Fatal(err)
			}
			allowed := allowedSigners(t, dir, allowedLine(t, key+".pub"))
			if out, err := keygenVerify(t, allowed, file); err != nil {
				t.Fatalf("ssh-keygen -Y verify rejects pibake's signature: %v\n%s", err, out)
			}
			checkTampering(t, allowed, file)
		})
	}
}

// checkTampering: a flipped byte in the file, then in the signature,
// fails both ssh-keygen and Verify.
func checkTampering(t *testing.T, allowedPath, file string) {
	t.Helper()
	ab, _ := os.ReadFile(allowedPath)
	allowed, err := ParseAllowedSigners(ab)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := VerifyFile(file, allowed); err != nil || len(p) != 1 || p[0] != principal {
		t.Fatalf("VerifyFile of a good signature = %v, %v", p, err)
	}
	orig, _ := os.ReadFile(file)
	flipByte(t, file, func(n int) int { return n / 2 })
	if out, err := keygenVerify(t, allowedPath, file); err == nil {
		t.Errorf("ssh-keygen -Y verify accepts a file with a flipped byte:\n%s", out)
	}
	if _, err := VerifyFile(file, allowed); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifyFile of a file with a flipped byte = %v; want ErrBadSignature", err)
	}
	os.WriteFile(file, orig, 0o644)
	flipSignatureByte(t, file+SigSuffix)
	if out, err := keygenVerify(t, allowedPath, file); err == nil {
		t.Errorf("ssh-keygen -Y verify accepts a signature with a flipped byte:\n%s", out)
	}
	if _, err := VerifyFile(file, allowed); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifyFile of a signature with a flipped byte = %v; want ErrBadSignature", err)
	}
}

// TestVerifySSHKeygenSignatures: signatures ssh-keygen -Y sign made pass
// Verify; a wrong namespace, a tampered file and an unlisted key fail.
func TestVerifySSHKeygenSignatures(t *testing.T) {
	for _, kind := range [][]string{{"-t", "ed25519"}, {"-t", "ecdsa"}, {"-t", "rsa", "-b", "2048"}} {
		t.Run(kind[1], func(t *testing.T) {
			dir := t.TempDir()
			key := keygen(t, dir, "id", "", kind...)
			other := keygen(t, dir, "other", "", "-t", "ed25519")
			file := filepath.Join(dir, "provenance.json")
			os.WriteFile(file, []byte(`{"_type":"https://in-toto.io/Statement/v1"}`+"\n"), 0o644)
			for _, ns := range []string{Namespace, "file"} {
				if out, err := testimage.Run(t, "ssh-keygen", "-Y", "sign", "-f", key, "-n", ns, file); err != nil {
					t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
				}
				if ns == Namespace {
					os.Rename(file+SigSuffix, file+".pibake.sig")
				}
			}
			allowed, err := ParseAllowedSigners([]byte(allowedLine(t, key+".pub")))
			if err != nil {
				t.Fatal(err)
			}
			sig, _ := os.ReadFile(file + ".pibake.sig")
			if p, err := Verify(bytes.NewReader(mustRead(t, file)), sig, Namespace, allowed); err != nil || p[0] != principal {
				t.Errorf("Verify of ssh-keygen's signature = %v, %v", p, err)
			}
			fileSig, _ := os.ReadFile(file + SigSuffix)
			if _, err := Verify(bytes.NewReader(mustRead(t, file)), fileSig, Namespace, allowed); err == nil || !strings.Contains(err.Error(), `made for namespace "file"`) {
				t.Errorf("Verify of a signature for namespace file = %v; want a namespace error", err)
			}
			if _, err := Verify(strings.NewReader("other content"), sig, Namespace, allowed); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify of other content = %v; want ErrBadSignature", err)
			}
			others, _ := ParseAllowedSigners([]byte(allowedLine(t, other+".pub")))
			if _, err := Verify(bytes.NewReader(mustRead(t, file)), sig, Namespace, others); !errors.Is(err, ErrUnknownSigner) {
				t.Errorf("Verify against other allowed signers = %v; want ErrUnknownSigner", err)
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgent signs through a real ssh-agent holding an ed25519 and an RSA
// key, named by their .pub files, as ssh-keygen -Y sign -f KEY.pub does.
func TestAgent(t *testing.T) {
	testimage.Tool(t, "ssh-add")
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command(testimage.Tool(t, "ssh-agent"), "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	for _, kind := range [][]string{{"-t", "ed25519"}, {"-t", "rsa", "-b", "3072"}} {
		key := keygen(t, dir, "id_"+kind[1], "", kind...)
		if out, err := testimage.Run(t, "ssh-add", key); err != nil {
			t.Fatalf("ssh-add: %v\n%s", err, out)
		}
		s, err := Load(key+".pub", nil)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "SHA256SUMS-"+kind[1])
		os.WriteFile(file, []byte("0000  x.img\n"), 0o644)
		if _, err := File(s, file); err != nil {
			t.Fatal(err)
		}
		s.Close()
		allowed := allowedSigners(t, dir, allowedLine(t, key+".pub"))
		if out, err := keygenVerify(t, allowed, file); err != nil {
			t.Errorf("%s via ssh-agent: ssh-keygen -Y verify: %v\n%s", kind[1], err, out)
		}
	}
	stranger := keygen(t, dir, "stranger", "", "-t", "ed25519")
	if _, err := Load(stranger+".pub", nil); err == nil || !strings.Contains(err.Error(), "ssh-agent does not hold it") {
		t.Errorf("Load of a key the agent lacks = %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	pass := keygen(t, dir, "withpass", "right", "-t", "ed25519")
	weak := keygen(t, dir, "weak", "", "-t", "rsa", "-b", "1024")
	asked := 0
	_, err := Load(pass, func(string) ([]byte, error) { asked++; return []byte("wrong"), nil })
	if err == nil || !strings.Contains(err.Error(), "wrong passphrase, 3 tries") || asked != 3 {
		t.Errorf("Load with a wrong passphrase = %v after %d prompts; want a refusal after 3", err, asked)
	}
	if _, err := Load(pass, nil); err == nil || !strings.Contains(err.Error(), "has a passphrase, and there is no terminal") {
		t.Errorf("Load of a key with a passphrase and no prompt = %v", err)
	}
	if _, err := Load(weak, nil); err == nil || !strings.Contains(err.Error(), "1024 bits is too weak") {
		t.Errorf("Load of a 1024-bit RSA key = %v", err)
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := Load(pass+".pub", nil); err == nil || !strings.Contains(err.Error(), "SSH_AUTH_SOCK is not set") {
		t.Errorf("Load of a public key without an agent = %v", err)
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, err := Load(garbage, nil); err == nil || !strings.Contains(err.Error(), "not an OpenSSH private or public key") {
		t.Errorf("Load of garbage = %v", err)
	}
}

func TestParseAllowedSigners(t *testing.T) {
	dir := t.TempDir()
	key := keygen(t, dir, "id", "", "-t", "ed25519")
	pub := strings.TrimSpace(string(mustRead(t, key+".pub")))
	tests := []struct {
		line, ns string
		allows   bool
		err      string
	}{
		{line: "a@x,b@x " + pub, ns: Namespace, allows: true},
		{line: `a@x namespaces="pibake,git" ` + pub, ns: Namespace, allows: true},
		{line: `a@x namespaces="file,pib*" ` + pub, ns: Namespace, allows: true},
		{line: `a@x namespaces="file" ` + pub, ns: Namespace, allows: false},
		{line: "a@x cert-authority " + pub, err: "option cert-authority is not supported"},
		{line: `a@x valid-after="20250101" ` + pub, err: "option valid-after is not supported"},
		{line: "a@x ssh-ed25519 AAAA", err: "public key"},
	}
	for _, tt := range tests {
		got, err := ParseAllowedSigners([]byte("# comment\n\n" + tt.line + "\n"))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), "line 3: "+tt.err) {
				t.Errorf("ParseAllowedSigners(%q) = %v; want an error with %q at line 3", tt.line, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAllowedSigners(%q): %v", tt.line, err)
			continue
		}
		if got[0].allows(tt.ns) != tt.allows {
			t.Errorf("%q allows %s = %v; want %v", tt.line, tt.ns, !tt.allows, tt.allows)
		}
	}
	if a, _ := ParseAllowedSigners([]byte("a@x,b@x " + pub)); fmt.Sprint(a[0].Principals) != "[a@x b@x]" {
		t.Errorf("principals = %v", a[0].Principals)
	}
}
