package status

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		stage    string // "" when Parse must fail
	}{
		{name: "record", in: `{"version":1,"node":"pi-1","stage":"cgroup","state":"failed","final":true}`, stage: StageCgroup},
		{name: "other version", in: `{"version":2,"stage":"cgroup"}`},
		{name: "no stage", in: `{"version":1}`},
		{name: "not JSON", in: `{"version":1,`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.in))
			switch {
			case tt.stage == "" && err == nil:
				t.Errorf("Parse(%s) = %+v; want an error", tt.in, r)
			case tt.stage != "" && (err != nil || r.Stage != tt.stage || !r.Final):
				t.Errorf("Parse(%s) = %+v, %v; want stage %s, final", tt.in, r, err, tt.stage)
			}
		})
	}
}

// TestParseLog skips a line cut short (a power cut while appending) and
// keeps the rest in order.
func TestParseLog(t *testing.T) {
	log := `{"version":1,"stage":"activate","state":"ok"}
{"version":1,"stage":"clock","sta
{"version":1,"stage":"apt-update","state":"running"}
`
	got := ParseLog([]byte(log))
	if len(got) != 2 || got[0].Stage != StageActivate || got[1].Stage != StageAptUpdate || got[1].State != StateRunning {
		t.Errorf("ParseLog = %+v; want activate ok, apt-update running", got)
	}
}
