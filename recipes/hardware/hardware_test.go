package hardware

import (
	"testing"
)

// TestParseBootOrder checks the nibble order against the documented
// examples (eeprom-bootloader.adoc, "BOOT_ORDER examples").
func TestParseBootOrder(t *testing.T) {
	for _, tt := range []struct{ order, want string }{
		{order: "sd,usb", want: "0xf41"},
		{order: "usb,sd", want: "0xf14"},
		{order: "sd,network", want: "0xf21"},
		{order: "nvme,usb", want: "0xf46"},
		{order: "nvme,sd,usb", want: "0xf416"},
		{order: "sd,usb,nvme,network,http,restart", want: "0xf72641"},
		{order: "usb,rpiboot", want: "0x34"},
	} {
		got, _, problem := parseBootOrder(tt.order)
		if got != tt.want || problem != "" {
			t.Errorf("parseBootOrder(%q) = %q, %q; want %q", tt.order, got, problem, tt.want)
		}
	}
	if _, _, problem := parseBootOrder("sd,usb,nvme,network,http,rpiboot,restart"); problem == "" {
		t.Error("an order after rpiboot was accepted")
	}
	if _, _, problem := parseBootOrder("sd,usb,nvme,network,http,rpiboot"); problem != "" {
		t.Errorf("six modes ending in rpiboot refused: %s", problem)
	}
	if _, _, problem := parseBootOrder(""); problem == "" {
		t.Error("an empty order was accepted")
	}
}
