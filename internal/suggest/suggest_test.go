package suggest

import "testing"

func TestNearest(t *testing.T) {
	cmds := []string{"build", "flash", "fetch", "lock", "plan", "validate"}
	for _, tc := range []struct{ word, want string }{
		{"buld", "build"}, {"biuld", "build"}, {"flsh", "flash"}, {"valdate", "validate"},
		{"bake", ""}, {"", ""}, {"raspios_lite_arm64:lates", ""},
	} {
		if got := Nearest(tc.word, cmds, 2); got != tc.want {
			t.Errorf("Nearest(%q) = %q; want %q", tc.word, got, tc.want)
		}
	}
	if got := Nearest("raspios_lite_arm64:lates", []string{"raspios_lite_arm64:latest"}, 12); got != "raspios_lite_arm64:latest" {
		t.Errorf("Nearest(alias) = %q", got)
	}
	if d := Distance("kitten", "sitting"); d != 3 {
		t.Errorf("Distance(kitten, sitting) = %d; want 3", d)
	}
}
