package infer

// Common output heads, read from the raw output tensors when their layout
// says what they are (the tensors are returned as well):
//   - SSD / EfficientDet with TFLite_Detection_PostProcess: four float32
//     outputs, boxes [1,N,4] (ymin, xmin, ymax, xmax, normalised), classes
//     [1,N], scores [1,N], count [1];
//   - pose (MoveNet single-pose, PoseNet-style heatmap-free heads): one
//     float32 output [1,1,K,3] of (y, x, score) per keypoint.

import (
	"encoding/binary"
	"math"
	"slices"
)

// Detection is one detected object.
type Detection struct {
	Box   [4]float32 `json:"box"` // ymin, xmin, ymax, xmax, 0..1
	Class int        `json:"class"`
	Label string     `json:"label,omitempty"`
	Score float32    `json:"score"`
}

// Keypoint is one pose keypoint.
type Keypoint struct {
	Y     float32 `json:"y"` // 0..1
	X     float32 `json:"x"`
	Score float32 `json:"score"`
}

func floats(o Output) ([]float32, bool) {
	if o.Type != "float32" || len(o.Data)%4 != 0 {
		return nil, false
	}
	f := make([]float32, len(o.Data)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(o.Data[4*i:]))
	}
	return f, true
}

// Detections reads a TFLite_Detection_PostProcess head, best first; ok is
// false when outs are not laid out as one.
func Detections(outs []Output, labels []string) (dets []Detection, ok bool) {
	if len(outs) != 4 {
		return nil, false
	}
	boxes, ok1 := floats(outs[0])
	classes, ok2 := floats(outs[1])
	scores, ok3 := floats(outs[2])
	count, ok4 := floats(outs[3])
	if !ok1 || !ok2 || !ok3 || !ok4 || len(count) != 1 || !slices.Equal(outs[0].Shape, []int{1, len(scores), 4}) || len(classes) != len(scores) {
		return nil, false
	}
	n := min(int(count[0]), len(scores))
	for i := range max(n, 0) {
		d := Detection{Box: [4]float32{boxes[4*i], boxes[4*i+1], boxes[4*i+2], boxes[4*i+3]}, Class: int(classes[i]), Score: scores[i]}
		if d.Class >= 0 && d.Class < len(labels) {
			d.Label = labels[d.Class]
		}
		dets = append(dets, d)
	}
	slices.SortStableFunc(dets, func(a, b Detection) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return 0
	})
	return dets, true
}

// Keypoints reads a single-pose head; ok is false when outs are not one.
func Keypoints(outs []Output) (kps []Keypoint, ok bool) {
	if len(outs) != 1 || len(outs[0].Shape) != 4 || outs[0].Shape[0] != 1 || outs[0].Shape[1] != 1 || outs[0].Shape[3] != 3 {
		return nil, false
	}
	f, ok := floats(outs[0])
	if !ok {
		return nil, false
	}
	for i := 0; i+3 <= len(f); i += 3 {
		kps = append(kps, Keypoint{Y: f[i], X: f[i+1], Score: f[i+2]})
	}
	return kps, true
}
