"""Cells of intro_to_modules.ipynb: the TensorFlow guide "Introduction to modules,
layers, and models", retold for jmod. `python notebooks/make_notebooks.py` writes
the notebook from this list."""

TITLE = "Introduction to modules, layers, and models"

CELLS = [
    (
        "md",
        """
# Introduction to modules, layers, and models

To do machine learning you define models, train them, save them and load them
back. Abstractly, a model is

* a function that computes something on arrays (a **forward pass**), and
* some variables that can be updated in response to training.

This notebook retells TensorFlow's guide *Introduction to modules, layers, and
models* for **jmod**: the same objects (`Module`, `Variable`, Keras-style layers
and models), running on JAX. Under the objects every computation is a pure
function over a pytree of variables, compiled by `jax.jit` once per input
signature.

Everything here runs on the CPU and writes its files into the current
directory.
""",
    ),
    ("md", "## Setup"),
    (
        "code",
        """
import os

import jax
import jax.numpy as jnp

import jmod

jmod.random.set_seed(0)  # reproducible initial values
print("jmod", jmod.__version__, "on", jax.devices()[0].platform)
""",
    ),
    (
        "md",
        """
## Modules in jmod

Most models are made of layers: functions with a known mathematical structure
that can be reused and have trainable variables. In jmod, as in TensorFlow,
layers and models are built on one base class: `jmod.Module`.

### Building modules

Here is a very simple module that operates on a scalar array:
""",
    ),
    (
        "code",
        """
class SimpleModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.a_variable = jmod.Variable(5.0, name="train_me")
        self.non_trainable_variable = jmod.Variable(5.0, trainable=False, name="do_not_train_me")

    def __call__(self, x):
        return self.a_variable * x + self.non_trainable_variable


simple_module = SimpleModule(name="simple")
simple_module(jnp.asarray(5.0))
""",
    ),
    (
        "md",
        """
Modules are "objects": they have internal state, and methods that use that
state. There is nothing special about `__call__` except that it makes the
module callable; you can give a module any methods you like.

Trainability can be switched on and off at any time, for example to freeze
layers while fine-tuning.

Any `jmod.Variable` or `jmod.Module` assigned to an attribute (directly, or
inside lists, tuples and dicts) is collected automatically. That is what lets
you save and load variables, and build collections of modules.
""",
    ),
    (
        "code",
        """
# All trainable variables
print("trainable variables:", simple_module.trainable_variables)
# Every variable
print("all variables:", simple_module.variables)
""",
    ),
    (
        "code",
        """
simple_module.a_variable.trainable = False  # freeze it
print("trainable after freezing:", simple_module.trainable_variables)
simple_module.a_variable.trainable = True
""",
    ),
    (
        "md",
        """
Here is a two-layer linear model made of modules. First a dense (linear)
layer:
""",
    ),
    (
        "code",
        """
class Dense(jmod.Module):
    def __init__(self, in_features, out_features, name=None):
        super().__init__(name=name)
        self.w = jmod.Variable(jmod.random.normal([in_features, out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([out_features]), name="b")

    def __call__(self, x):
        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)
""",
    ),
    ("md", "And then the complete model, which makes two layer instances and applies them:"),
    (
        "code",
        """
class SequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = Dense(in_features=3, out_features=3)
        self.dense_2 = Dense(in_features=3, out_features=2)

    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


# You have made a model!
my_model = SequentialModule(name="the_model")

# Call it, with random results
print("Model results:", my_model(jnp.array([[2.0, 2.0, 2.0]])))
""",
    ),
    (
        "md",
        """
Modules collect the variables and modules assigned to them, recursively, so a
single model instance manages the whole collection.
""",
    ),
    (
        "code",
        """
print("Submodules:", my_model.submodules)
""",
    ),
    (
        "code",
        """
for var in my_model.variables:
    print(var, "\\n")
""",
    ),
    (
        "md",
        """
Each variable has a **path**, made of the attribute names that lead to it.
The same paths key `state()` and checkpoints:
""",
    ),
    (
        "code",
        """
for path, var in my_model.named_variables():
    print(f"{path:12} {var.shape}")
""",
    ),
    (
        "md",
        """
In a notebook, a module renders as a foldable tree (through
[treescope](https://treescope.readthedocs.io)): submodules with their paths,
and each variable's shape, dtype, trainable flag and a summary of its values.
Click a triangle to open a variable and see its array. `repr` stays one
short line.
""",
    ),
    (
        "code",
        """
print(repr(my_model))
my_model
""",
    ),
    (
        "md",
        """
### Waiting to create variables

You may have noticed that the layer needed both its input and output sizes,
so that `w` has a known shape when it is created.

By deferring variable creation to the first call, with a concrete input
shape, you do not need to give the input size up front.
""",
    ),
    (
        "code",
        """
class FlexibleDenseModule(jmod.Module):
    # Note: No need for `in_features`
    def __init__(self, out_features, name=None):
        super().__init__(name=name)
        self.is_built = False
        self.out_features = out_features

    def __call__(self, x):
        # Create variables on first call.
        if not self.is_built:
            self.w = jmod.Variable(jmod.random.normal([x.shape[-1], self.out_features]), name="w")
            self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")
            self.is_built = True

        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)


# Used in a module
class MySequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = FlexibleDenseModule(out_features=3)
        self.dense_2 = FlexibleDenseModule(out_features=2)

    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


my_model = MySequentialModule(name="the_model")
print("Variables before the first call:", my_model.variables)
print("Model results:", my_model(jnp.array([[2.0, 2.0, 2.0]])))
print("Variable paths:", [path for path, _ in my_model.named_variables()])
""",
    ),
    (
        "md",
        """
This flexibility is why Keras-style layers such as `jmod.layers.Dense`
usually only need the size of their output.

## Saving weights

A module can be saved both as a *checkpoint* and as a *SavedModel*.

Checkpoints are just the weights: the values of the variables inside a module
and its submodules.
""",
    ),
    (
        "code",
        """
chkp_path = "my_checkpoint"
checkpoint = jmod.Checkpoint(model=my_model)
checkpoint.write(chkp_path)
""",
    ),
    (
        "md",
        """
A checkpoint has two kinds of files: the data itself, and an index with the
metadata. The index records what was saved (path, dtype, shape, where the
bytes are, checksums); the data files hold the values.
""",
    ),
    (
        "code",
        """
sorted(f for f in os.listdir(".") if f.startswith("my_checkpoint"))
""",
    ),
    (
        "md",
        """
You can look inside a checkpoint to make sure the whole collection of
variables was saved, keyed by the paths of the Python objects that hold them.
""",
    ),
    (
        "code",
        """
jmod.checkpoint.list_variables(chkp_path)
""",
    ),
    (
        "md",
        """
In distributed (multi-machine) training the data can be sharded, which is why
the files are numbered (`00000-of-00001`). Here there is a single shard.

Loading the model back overwrites the values in the Python object:
""",
    ),
    (
        "code",
        """
new_model = MySequentialModule()
new_checkpoint = jmod.Checkpoint(model=new_model)
new_checkpoint.restore("my_checkpoint")

# Should be the same result as above
new_model(jnp.array([[2.0, 2.0, 2.0]]))
""",
    ),
    (
        "md",
        """
`new_model` had no variables when it was restored: it builds them on its first
call, and each one receives its saved value as it is created.

Because checkpoints are at the heart of long training runs,
`jmod.CheckpointManager` keeps a directory of numbered
checkpoints, deleting the old ones:
""",
    ),
    (
        "code",
        """
manager = jmod.CheckpointManager(checkpoint, "training_checkpoints", max_to_keep=2)
for _ in range(3):
    manager.save()
print(manager.checkpoints, "latest:", manager.latest_checkpoint)
""",
    ),
    (
        "md",
        """
## Saving functions

TensorFlow can run models without the original Python objects, and so can
jmod. For that the computation must be known as a graph, independent of the
Python code that described it.

Decorating a method with `@jmod.jit` says that it runs as a compiled graph.
The variables of every module it reaches are passed into one `jax.jit`-compiled
pure function, and the variables it assigns are written back afterwards.
""",
    ),
    (
        "code",
        """
class MySequentialModule(jmod.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.dense_1 = Dense(in_features=3, out_features=3)
        self.dense_2 = Dense(in_features=3, out_features=2)

    @jmod.jit
    def __call__(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


# You have made a model with a graph!
my_model = MySequentialModule(name="the_model")
""",
    ),
    (
        "md",
        """
The module works exactly as before. Each unique signature (shapes and dtypes
of the array arguments, Python values) gets its own trace; a repeated
signature never traces again.
""",
    ),
    (
        "code",
        """
print(my_model([[2.0, 2.0, 2.0]]))
print(my_model([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]))
print(my_model([[2.0, 2.0, 2.0]]))  # same signature as the first call: no new trace
print("traces:", my_model.__call__.trace_count)
for signature in my_model.__call__.signatures:
    print(signature)
""",
    ),
    (
        "md",
        """
The compiled graph itself can be inspected: `.jaxpr(*args)` gives the JAX
program (its inputs are the variables, then the arguments), and `.lower(*args)`
the lowered XLA computation.
""",
    ),
    (
        "code",
        """
print(my_model.__call__.state_paths([[2.0, 2.0, 2.0]]))
print(my_model.__call__.jaxpr([[2.0, 2.0, 2.0]]))
""",
    ),
    (
        "md",
        """
### Visualizing the graph in TensorBoard

You can see the graph by tracing it into a TensorBoard summary. Operations are
named and grouped by module path (`the_model/dense_1/...`), so TensorBoard's
Graphs tab shows the module hierarchy, collapsed.
""",
    ),
    (
        "code",
        """
# Set up logging.
logdir = "logs/func"
writer = jmod.summary.create_file_writer(logdir)

# Create a new model to get a fresh trace.
# Otherwise the summary will not see the graph.
new_model = MySequentialModule()

# Bracket the function call with trace_on() and trace_export();
# jmod.profiler records a profile of the same call for TensorBoard's Profile tab.
jmod.summary.trace_on(graph=True)
jmod.profiler.start(logdir)
# Call only one jmod.jit function when tracing.
print(new_model(jnp.array([[2.0, 2.0, 2.0]])))
jmod.profiler.stop()
with writer.as_default():
    jmod.summary.trace_export(name="my_func_trace", step=0)
writer.flush()
""",
    ),
    (
        "md",
        """
Launch TensorBoard to view the resulting trace (not run here):

```
%load_ext tensorboard
%tensorboard --logdir logs/func
```

The same graph is available to programs as a TensorBoard `GraphDef`:
""",
    ),
    (
        "code",
        """
graph = new_model.__call__.graph(jnp.array([[2.0, 2.0, 2.0]]))
[node.name for node in graph.node if node.op != "Const"]
""",
    ),
    (
        "md",
        """
### Creating a SavedModel

The recommended way to share a trained model is a SavedModel: a collection of
functions (serialized `jax.export` programs, one per traced signature) plus a
checkpoint of the weights.
""",
    ),
    (
        "code",
        """
jmod.saved_model.save(my_model, "the_saved_model")
""",
    ),
    (
        "code",
        """
# Inspect the SavedModel in the directory
for root, _, files in sorted(os.walk("the_saved_model")):
    print(root, sorted(files))
""",
    ),
    (
        "md",
        """
`saved_model.json` describes the functions and their signatures; the
`variables/` directory holds a checkpoint of the variables.

The model can be loaded from this representation without the class that
built it: no Python code is read from the files. This is what you want for
serving, or when the original code is not available.
""",
    ),
    (
        "code",
        """
new_model = jmod.saved_model.load("the_saved_model")
new_model
""",
    ),
    (
        "md",
        """
`new_model` was made from the saved model. It is an object of jmod's own,
with no knowledge of the class: it is not a `MySequentialModule`.
""",
    ),
    (
        "code",
        """
isinstance(new_model, MySequentialModule)
""",
    ),
    (
        "md",
        """
The loaded model works for the signatures that were traced before saving. You
cannot add new signatures to a model restored this way: another input shape is
an error that lists the saved ones.
""",
    ),
    (
        "code",
        """
print(new_model([[2.0, 2.0, 2.0]]))
print(new_model([[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]))
try:
    new_model([[2.0, 2.0, 2.0, 2.0]])
except jmod.SignatureError as e:
    print("SignatureError:", str(e).splitlines()[0])
""",
    ),
    (
        "md",
        """
Here the model was saved and loaded in the same kernel. Loading works the same
in a fresh Python process that never defined `MySequentialModule`: only
`import jmod` is needed. From a shell, `python -m jmod.saved_model show
the_saved_model` lists the signatures. (To trace shapes you have not called
yet, or keep a dimension open, pass `signatures=` with
`jmod.saved_model.TensorSpec([None, 3])` to `save`.)

So with a SavedModel you can save jmod weights and graphs, and load them back.

## Keras-style models and layers

So far there has been no Keras. You can build your own high-level API on top
of `jmod.Module`, and jmod does: its Keras-style layers and models add

* optional losses,
* the optional `training` argument, to tell training use from inference,
* saving and restoring whole Python objects, not only black-box functions,
* `get_config` and `from_config`, which store the configuration exactly, so
  models can be rebuilt in Python,

and models come with `compile`, `fit`, `evaluate` and `predict` (see
`training.ipynb`).

### Keras-style layers

`jmod.layers.Layer` is the base class of all layers, and it subclasses
`jmod.Module`. You can turn a module into a layer by swapping the parent class
and renaming `__call__` to `call`:
""",
    ),
    (
        "code",
        """
class MyDense(jmod.layers.Layer):
    # Adding **kwargs to support base layer arguments (name, trainable, dtype)
    def __init__(self, in_features, out_features, **kwargs):
        super().__init__(**kwargs)

        # This will soon move to the build step; see below
        self.w = jmod.Variable(jmod.random.normal([in_features, out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([out_features]), name="b")

    def call(self, x):
        y = jnp.matmul(x, self.w) + self.b
        return jax.nn.relu(y)


simple_layer = MyDense(name="simple", in_features=3, out_features=3)
""",
    ),
    (
        "md",
        """
Layers have their own `__call__` that does some bookkeeping (described below)
and then calls `call()`. Nothing changes in what it computes.
""",
    ),
    (
        "code",
        """
simple_layer([[2.0, 2.0, 2.0]])
""",
    ),
    (
        "md",
        """
### The `build` step

As said above, it is often convenient to create variables only once the input
shape is known. Layers have an extra lifecycle step for that: `build` is called
exactly once, with the shape of the first input, and it usually creates the
variables (weights).

You can rewrite `MyDense` to adapt to the size of its input:
""",
    ),
    (
        "code",
        """
@jmod.saving.register_serializable()
class FlexibleDense(jmod.layers.Layer):
    # Note the added `**kwargs`, as layers support many arguments
    def __init__(self, out_features, **kwargs):
        super().__init__(**kwargs)
        self.out_features = out_features

    def build(self, input_shape):  # Create the state of the layer (weights)
        self.w = jmod.Variable(jmod.random.normal([input_shape[-1], self.out_features]), name="w")
        self.b = jmod.Variable(jnp.zeros([self.out_features]), name="b")

    def call(self, inputs):  # Defines the computation from inputs to outputs
        return jnp.matmul(inputs, self.w) + self.b

    def get_config(self):  # What `save` stores to rebuild the layer
        return {**super().get_config(), "out_features": self.out_features}


# Create the instance of the layer
flexible_dense = FlexibleDense(out_features=3)
""",
    ),
    ("md", "At this point the layer has not been built, so it has no variables:"),
    (
        "code",
        """
flexible_dense.variables
""",
    ),
    ("md", "Calling it makes variables of the right size:"),
    (
        "code",
        """
# Call it, with predictably random results
print("Model results:", flexible_dense(jnp.array([[2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])))
""",
    ),
    (
        "code",
        """
flexible_dense.variables
""",
    ),
    (
        "md",
        """
Since `build` runs only once, an input whose shape does not fit the layer's
variables is rejected, with an error that names the layer and the arguments:
""",
    ),
    (
        "code",
        """
try:
    print("Model results:", flexible_dense(jnp.array([[2.0, 2.0, 2.0, 2.0]])))
except jmod.LayerCallError as e:
    print("Failed:", e)
""",
    ),
    (
        "md",
        """
### Keras-style models

You can define a model as nested layers. jmod also has a full model class,
`jmod.Model`, a subclass of `jmod.layers.Layer`, so models can be used
and nested like layers. Models add training, evaluation, saving and loading.

The `SequentialModule` from above, with almost the same code: `__call__`
becomes `call()` and the parent class changes.
""",
    ),
    (
        "code",
        """
@jmod.saving.register_serializable()
class MySequentialModel(jmod.Model):
    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)

        self.dense_1 = FlexibleDense(out_features=3)
        self.dense_2 = FlexibleDense(out_features=2)

    def call(self, x):
        x = self.dense_1(x)
        return self.dense_2(x)


# You have made a Keras-style model!
my_sequential_model = MySequentialModel(name="the_model")

# Call it on an array, with random results
print("Model results:", my_sequential_model(jnp.array([[2.0, 2.0, 2.0]])))
""",
    ),
    ("md", "All the same features are there, including tracking variables and submodules."),
    (
        "code",
        """
my_sequential_model.variables
""",
    ),
    (
        "code",
        """
my_sequential_model.submodules
""",
    ),
    (
        "md",
        """
Subclassing `jmod.Model` is a very Pythonic way to build models, and
an easy one when porting models from other frameworks.

### The functional API

When a model is a simple composition of existing layers and inputs, the
functional API saves time and space, and comes with extras for rebuilding and
inspecting the architecture. Here is the same model with the functional API:
""",
    ),
    (
        "code",
        """
inputs = jmod.Input(shape=[3])

x = FlexibleDense(3)(inputs)
x = FlexibleDense(2)(x)

my_functional_model = jmod.Model(inputs=inputs, outputs=x)

my_functional_model.summary()
""",
    ),
    (
        "code",
        """
my_functional_model(jnp.array([[2.0, 2.0, 2.0]]))
""",
    ),
    (
        "md",
        """
The main difference is that the input shape is given up front, when the
functional model is built. It need not be complete: the batch dimension shows
as `None`, and other dimensions may be left `None` too.

(You do not need an `input_shape` or an `InputLayer` in a subclassed model.)

In a notebook a model shows its summary table above the foldable tree of its
layers and variables:
""",
    ),
    (
        "code",
        """
my_functional_model
""",
    ),
    (
        "md",
        """
## Saving Keras-style models

Models have their own whole-model format: a zip archive holding the config
(JSON), the weights (jmod's checkpoint format), the optimizer state if the
model was compiled, and metadata. By convention the file ends in `.jmod`.
""",
    ),
    (
        "code",
        """
my_sequential_model.save("exname_of_file.jmod")
""",
    ),
    (
        "md",
        """
Loading it back is just as easy. The classes come from the registry
(`@jmod.saving.register_serializable()` above): nothing in the file is
executed, and loading an unregistered class is an error that says so.
""",
    ),
    (
        "code",
        """
reconstructed_model = jmod.models.load_model("exname_of_file.jmod")
print(type(reconstructed_model).__name__)
""",
    ),
    (
        "md",
        """
The archive also keeps the losses, metrics and optimizer state of a compiled
model. The rebuilt model gives the same results on the same data:
""",
    ),
    (
        "code",
        """
x = jnp.array([[2.0, 2.0, 2.0]])
print(reconstructed_model(x))
print("same as the original:", bool(jnp.allclose(reconstructed_model(x), my_sequential_model(x))))
""",
    ),
    (
        "md",
        """
### Checkpointing Keras-style models

Models can be checkpointed too, in the same way as modules:
""",
    ),
    (
        "code",
        """
jmod.Checkpoint(model=my_sequential_model).write("keras_checkpoint")
jmod.checkpoint.list_variables("keras_checkpoint")
""",
    ),
    (
        "md",
        """
## Next steps

* `training.ipynb`: `compile`, `fit`, `evaluate` and `predict` on a model.
* `python -m jmod.tour` prints this story step by step, without Jupyter.
""",
    ),
]
