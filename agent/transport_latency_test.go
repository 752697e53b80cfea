package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edge-agent/edge-agent/agent"
	"github.com/edge-agent/edge-agent/mqtt/mqtttest"
)

// One warm request, the same model and image, over each transport: the
// median of 100 round trips as a client sees them (connections kept
// open: a paho client on mosquitto, a keep-alive HTTP client). A
// measurement, not a check; run it with
//
//	EDGE_AGENT_MEASURE=1 go test -count=1 -v -run TestTransportLatency ./agent
func TestTransportLatency(t *testing.T) {
	if os.Getenv("EDGE_AGENT_MEASURE") == "" {
		t.Skip("a measurement: EDGE_AGENT_MEASURE=1 go test -count=1 -v -run TestTransportLatency ./agent")
	}
	const n = 100
	broker := mqtttest.Start(t, mqtttest.Options{})
	httpAddr := mqtttest.FreeAddr(t)
	_, base := startOIP(t, httpAddr, func(c *agent.Config) { c.MQTT.Brokers, c.MQTT.Device = []string{broker.URL()}, "lat" })
	img := readShared(t, "cat.bmp")

	// MQTT: the binary infer command, reply on reply/<id>.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("lat-client").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	replies := make(chan []byte, 1)
	if tok := c.Subscribe("edge/lat/reply/#", 1, func(_ paho.Client, m paho.Message) { replies <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	var invokes []float64 // the agent's invoke alone, from the MQTT replies
	mqttOnce := func(i int) {
		tok := c.Publish(fmt.Sprintf("edge/lat/cmd/infer/r%d/%s", i, oipModel), 1, false, img)
		tok.Wait()
		var r struct {
			OK     bool
			Result agent.InferReply
		}
		if err := json.Unmarshal(<-replies, &r); err != nil || !r.OK || len(r.Result.Top) == 0 || r.Result.Top[0].Index != 286 {
			t.Fatalf("mqtt infer: %v %+v", err, r)
		}
		if i >= 0 {
			invokes = append(invokes, r.Result.InvokeMs)
		}
	}
	hc := &http.Client{}
	httpOnce := func(int) {
		resp, err := hc.Post(base+"/v2/models/"+oipModel+"/infer", "image/bmp", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		var r v2InferResponse
		err = json.NewDecoder(resp.Body).Decode(&r)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || argmax(t, r.Outputs[0].Data) != 286 {
			t.Fatalf("http infer: %d %v", resp.StatusCode, err)
		}
	}
	for i := range 5 { // warm: the model, the connections
		mqttOnce(-1 - i)
		httpOnce(-1 - i)
	}
	// Interleaved, one of each in turn, so a busy machine weighs on both
	// alike.
	var dm, dh []time.Duration
	for i := range n {
		t0 := time.Now()
		mqttOnce(i)
		t1 := time.Now()
		httpOnce(i)
		dm, dh = append(dm, t1.Sub(t0)), append(dh, time.Since(t1))
	}
	for _, d := range []struct {
		name string
		d    []time.Duration
	}{{"mqtt (mosquitto, binary payload)", dm}, {"http (OIP, image/bmp body)", dh}} {
		slices.Sort(d.d)
		t.Logf("%s: median %.2f ms, p10 %.2f, p90 %.2f (n=%d, %s, cat.bmp)", d.name, ms(d.d[n/2]), ms(d.d[n/10]), ms(d.d[n*9/10]), n, oipModel)
	}
	slices.Sort(invokes)
	t.Logf("the invoke alone (agent side): median %.2f ms", invokes[n/2])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
