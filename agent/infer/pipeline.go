package infer

import (
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edge-agent/edge-agent/tflite"
)

// Request is one inference through the pipeline shared by the CLI's
// `infer`, the MQTT `infer` command and the bench: decode → preprocess →
// invoke → postprocess. Exactly one of Image and Tensor is set.
type Request struct {
	// Image is a decoded image, scaled into whichever model answers.
	Image image.Image
	// Tensor is a raw input tensor; it must match the input's byte size.
	Tensor []byte
	// Path names where the input came from, for errors ("" for commands).
	Path string
	// Norm maps pixels to float inputs; the zero value is the default.
	Norm Normalization
	// Top ranks that many classes of output 0 (labelled from Labels).
	Top    int
	Labels []string
	// Raw keeps the raw output tensor instead of ranking classes.
	Raw bool
}

// Kind is "image" or "raw".
func (r Request) Kind() string {
	if r.Image != nil {
		return "image"
	}
	return "raw"
}

// ReadRequest decodes the input file at path: an image when its content
// (or extension) says so, bounded by maxPixels (0: DefaultMaxPixels),
// otherwise raw tensor bytes.
func ReadRequest(path string, maxPixels int) (Request, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Request{}, &InputError{Path: path, Kind: ErrInputRead, Detail: err.Error(), Err: err}
	}
	format := sniff(data)
	switch {
	case format == "bmp" || format == "png" || format == "jpeg":
		img, err := decodeBounded(data, path, maxPixels)
		if err != nil {
			return Request{}, err
		}
		return Request{Image: img, Path: path}, nil
	case format != "":
		return Request{}, &InputError{Path: path, Kind: ErrUnsupportedInput, Detail: format + " images are not supported (use BMP, PNG or JPEG)"}
	case imageExts[strings.ToLower(filepath.Ext(path))]:
		return Request{}, &InputError{Path: path, Kind: ErrImageDecode,
			Detail: fmt.Sprintf("named %s but the content is not that image format", filepath.Ext(path))}
	}
	return Request{Tensor: data, Path: path}, nil
}

// Prepare makes the bytes of input tensor t from r (preprocess).
func (r Request) Prepare(t tflite.TensorInfo) ([]byte, error) {
	if r.Image != nil {
		b, err := FromImage(r.Image, t, r.Norm)
		if err != nil {
			return nil, &InputError{Path: r.Path, Kind: kindOf(err), Detail: err.Error(), Err: err}
		}
		return b, nil
	}
	if len(r.Tensor) != t.Bytes {
		return nil, &InputError{Path: r.Path, Kind: tflite.ErrInputSize,
			Detail: fmt.Sprintf("raw input has %d bytes, input %q (%s %v) takes %d", len(r.Tensor), t.Name, t.Type, t.Shape, t.Bytes)}
	}
	return r.Tensor, nil
}

// Invoker is what Run needs of a warm interpreter: its tensors and an
// invoke. A pool lease is one (its Invoke measures a first invoke and
// resets variable tensors); Interpreter wraps a bare interpreter.
type Invoker interface {
	Interpreter() *tflite.Interpreter
	Invoke() error
}

// Interpreter makes a bare interpreter an Invoker.
type Interpreter struct{ It *tflite.Interpreter }

// Interpreter returns it.
func (i Interpreter) Interpreter() *tflite.Interpreter { return i.It }

// Invoke runs it.
func (i Interpreter) Invoke() error { return i.It.Invoke() }

// Result is what one run produced.
type Result struct {
	// Top ranks the classes of a classifier: a model whose only output is
	// one score vector ([N] or [1,N], float or quantized), unless Raw.
	Top []Class
	// Outputs are every output tensor of any other model (a segmentation
	// map, a detector's boxes, pose keypoints), unless Raw; Detections and
	// Keypoints read them when their layout is a known head (heads.go).
	Outputs    []Output
	Detections []Detection
	Keypoints  []Keypoint
	Raw        []byte            // output 0's bytes
	Output     tflite.TensorInfo // output 0
	Invoke     time.Duration     // the invoke alone
}

// Output is one output tensor as it came out: its data in the tensor's own
// type, little-endian (base64 in JSON).
type Output struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Shape []int  `json:"shape"`
	Data  []byte `json:"data"`
}

// IsScoreVector says whether a model with these outputs is a classifier:
// a single output holding one vector of scores (one score too: a sigmoid
// like XOR's), of a type that dequantizes.
func IsScoreVector(outs []tflite.TensorInfo) bool {
	if len(outs) != 1 {
		return false
	}
	t := outs[0]
	switch t.Type {
	case "float32", "uint8", "int8":
	default:
		return false
	}
	long := 0
	for _, d := range t.Shape {
		if d > 1 {
			long++
		}
	}
	return long <= 1 && t.Elements() >= 1
}

// Run is the pipeline: preprocess r for inv's input 0, invoke, read output
// 0 and (unless r.Raw) rank its classes when the model is a classifier, or
// return every output tensor when it is not.
func Run(inv Invoker, r Request) (Result, error) {
	it := inv.Interpreter()
	ins := it.Inputs()
	if len(ins) == 0 {
		return Result{}, &InputError{Path: r.Path, Kind: tflite.ErrTensorIndex, Detail: "the model has no input"}
	}
	input, err := r.Prepare(ins[0])
	if err != nil {
		return Result{}, err
	}
	if err := it.SetInput(0, input); err != nil {
		return Result{}, err
	}
	t := time.Now()
	if err := inv.Invoke(); err != nil {
		return Result{}, err
	}
	res := Result{Invoke: time.Since(t), Output: it.Outputs()[0]}
	if res.Raw, err = it.CopyOutput(0, nil); err != nil {
		return Result{}, err
	}
	if r.Raw {
		return res, nil
	}
	if outs := it.Outputs(); !IsScoreVector(outs) {
		for i, o := range outs {
			data := res.Raw
			if i > 0 {
				if data, err = it.CopyOutput(i, nil); err != nil {
					return Result{}, err
				}
			}
			res.Outputs = append(res.Outputs, Output{Name: o.Name, Type: o.Type, Shape: o.Shape, Data: data})
		}
		res.Detections, _ = Detections(res.Outputs, r.Labels)
		res.Keypoints, _ = Keypoints(res.Outputs)
		return res, nil
	}
	scores, err := tflite.Dequantize(res.Output, res.Raw, nil)
	if err != nil {
		return Result{}, err
	}
	res.Top = TopK(scores, max(r.Top, 1), r.Labels)
	return res, nil
}
