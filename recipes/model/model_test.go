package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2-hunter2-hunter2")
	for _, got := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %+v %#v", s, s, s, s, s),
		fmt.Sprintf("%+v", WiFi{SSID: "x", PSK: s}), fmt.Sprintf("%#v", User{PasswordHash: s}),
	} {
		if strings.Contains(got, "hunter2") {
			t.Errorf("formatted secret reveals it: %s", got)
		}
	}
	js, err := json.Marshal(WiFi{PSK: s})
	var back WiFi
	if err == nil {
		err = json.Unmarshal(js, &back)
	}
	if err != nil || strings.Contains(string(js), "hunter2") || back.PSK != redacted {
		t.Errorf("json.Marshal = %s, %v; want the psk redacted", js, err)
	}
	if s.Reveal() != "hunter2-hunter2-hunter2" {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
}
