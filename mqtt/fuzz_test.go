package mqtt

import (
	"strings"
	"testing"
)

// FuzzParseCommandTopic: any topic and payload a client publishes parse to
// a command whose verb and id are valid ids, within the size limit, or to
// a coded rejection; never a panic.
func FuzzParseCommandTopic(f *testing.F) {
	c, err := New(Options{Brokers: []string{"tcp://127.0.0.1:1"}, Device: "dev1", MaxPayload: 1024}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][2]string{{"edge/dev1/cmd/status", `{}`}, {"edge/dev1/cmd/infer/r1/v2", "\x89PNG"},
		{"edge/dev1/cmd/infer/r1", `{"id":"r1"}`}, {"edge/dev1/cmd/a/b/c/d", ""}, {"edge/dev1/cmd/infer", `{"id":"../x"}`},
		{"edge/dev2/cmd/status", ""}, {"edge/dev1/cmd/", " {"}} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		cmd, err := c.parseTopic(topic, payload) // on paho's router
		if err == nil {
			err = envelope(&cmd) // on a worker
		}
		if err != nil {
			if CodeOf(err) == "internal" {
				t.Fatalf("uncoded rejection: %v", err)
			}
			return
		}
		if !ValidID(cmd.Verb) || (cmd.ID != "" && !ValidID(cmd.ID)) || len(payload) > 1024 || strings.Contains(cmd.Model, "/") {
			t.Fatalf("accepted %q %q: %+v", topic, payload, cmd)
		}
		if cmd.Binary && cmd.ID == "" {
			t.Fatalf("binary payload without a request id: %q", topic)
		}
	})
}
