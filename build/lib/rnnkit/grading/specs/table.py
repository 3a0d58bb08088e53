"""The rule table: for every graded check of the eight assignments, what its answer must not use and what it may.

This is the one place the rules are written. :func:`~rnnkit.grading.specs.register` attaches each entry to its spec
(a spec without an entry is an error), the notebooks' "Rules" paragraphs are generated from it
(:func:`rnnkit.grading.release.rules_markdown`), the trusted parent enforces it statically on the answer cells and
the sandbox's guard records forbidden calls while the graded function runs.

How it was decided (read each notebook): a part that asks for an equation forbids every library routine that
computes that equation (the ``torch.nn`` module, its functional form, the ATen op behind it, ``torch._VF``) and all
of ``rnnkit`` (the course library holds every answer), and allows the elementwise pieces the equation is written
with. Parts that reuse an earlier part say so in the notebook (**Uses ...**); calling the student's own function is
never forbidden. Where the part IS the trick (log-sum-exp in ``next_symbol_log_probs``) the one-call shortcut is
forbidden; where it is only a step (``sequence_nll``) it is allowed.
"""
from __future__ import annotations

from ..rules import Rule

# the course library holds a reference for every answer; torch._VF / torch._C._VariableFunctions are the ATen
# entry points behind torch.nn's recurrent modules
_LIBRARY = ("rnnkit", "torch._VF.*", "torch._C._VariableFunctions.*")
_ELEMENTWISE = ("torch.sigmoid", "torch.tanh", "torch.nn.functional.linear", "torch.einsum", "torch.addcmul",
                "torch.lerp", "torch.where")

RNN_CELL = Rule(
    forbidden=("torch.nn.RNN", "torch.nn.RNNCell", "torch.rnn_tanh_cell", "torch.rnn_relu_cell", "torch.rnn_tanh",
               "torch.rnn_relu", *_LIBRARY),
    why="this exercise asks you to write the RNN equations yourself",
    allowed=_ELEMENTWISE)
LSTM_CELL = Rule(
    forbidden=("torch.nn.LSTM", "torch.nn.LSTMCell", "torch.lstm_cell", "torch.lstm", *_LIBRARY),
    why="this exercise asks you to write the LSTM equations yourself",
    allowed=_ELEMENTWISE)
GRU_CELL = Rule(
    forbidden=("torch.nn.GRU", "torch.nn.GRUCell", "torch.gru_cell", "torch.gru", *_LIBRARY),
    why="this exercise asks you to write the GRU equations yourself",
    allowed=_ELEMENTWISE)
GRU_FROM_TORCH = Rule(GRU_CELL.forbidden, "this exercise asks you to run YOUR cell with the module's weights",
                      allowed=_ELEMENTWISE, uncallable_args=("cell",))
# counting: building any recurrent module and summing its parameters is the count itself
PARAM_COUNT = Rule(
    forbidden=("torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNNBase", "torch.nn.LSTMCell",
               "torch.nn.GRUCell", "torch.nn.RNNCell", *_LIBRARY),
    why="this exercise asks you to derive the count from the shapes of the weights")
_SOFTMAX = ("torch.log_softmax", "torch.nn.functional.log_softmax", "torch.Tensor.log_softmax",
            "torch.special.log_softmax", "torch.nn.LogSoftmax", "torch.softmax", "torch.nn.functional.softmax",
            "torch.Tensor.softmax", "torch.special.softmax", "torch.nn.Softmax", "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss", "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss",
            "torch.distributions.Categorical", "torch.distributions.OneHotCategorical")
LOG_SOFTMAX = Rule(
    forbidden=(*_SOFTMAX, "torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp", *_LIBRARY),
    why="this exercise asks you to write the stable log-softmax (the log-sum-exp trick) yourself",
    allowed=("torch.exp", "torch.log", "torch.max", "torch.amax"))
NLL = Rule(
    forbidden=(*_SOFTMAX, *_LIBRARY),
    why="this exercise asks you to compute the loss from your own next_symbol_log_probs",
    allowed=("torch.logsumexp", "torch.gather", "torch.where"))
SAMPLING = Rule(
    forbidden=("torch.distributions.Categorical", "torch.distributions.OneHotCategorical", *_LIBRARY),
    why="this exercise asks you to follow the written sampling recipe yourself",
    allowed=("torch.softmax", "torch.multinomial"))
# manual backpropagation: any automatic differentiation computes the answer
_AUTOGRAD = ("torch.autograd.*", "torch.Tensor.backward", "torch.func.*", "torch.vmap", "torch.enable_grad",
             "torch.set_grad_enabled", "torch.Tensor.requires_grad_")
BPTT = Rule(
    forbidden=(*_AUTOGRAD, "torch.nn.RNN", "torch.nn.RNNCell", "torch.rnn_tanh_cell", "torch.rnn_tanh", *_LIBRARY),
    why="this exercise asks you to derive and compute the gradients yourself, without autograd",
    allowed=("torch.tanh", "torch.zeros_like", "torch.einsum"))
NUMERIC_GRADIENT = Rule(
    forbidden=(*_AUTOGRAD, *_LIBRARY),
    why="this exercise asks you to estimate the gradient by central differences yourself",
    allowed=("torch.zeros_like", "torch.Tensor.view"))
RELATIVE_ERROR = Rule(
    forbidden=("torch.testing.*", "torch.nn.functional.pairwise_distance", *_LIBRARY),
    why="this exercise asks you to write the relative-error formula yourself",
    allowed=("torch.linalg.vector_norm", "torch.Tensor.norm"))
_CLIP = ("torch.nn.utils.clip_grad_*", "torch.nn.utils.clip_grads_with_norm_", "torch.nn.utils.get_total_norm",
         "torch.nn.utils.clip_grad.*")
CLIPPING = Rule(
    forbidden=(*_CLIP, *_LIBRARY),
    why="this exercise asks you to write the clipping rule yourself",
    allowed=("torch.clamp", "torch.Tensor.clamp", "torch.linalg.vector_norm", "torch.sqrt"))
COSINES = Rule(
    forbidden=(*_CLIP, "torch.nn.functional.cosine_similarity", "torch.nn.CosineSimilarity", *_LIBRARY),
    why="this exercise asks you to clip with your own functions and write the cosine yourself",
    allowed=("torch.cat", "torch.dot", "torch.Tensor.norm"))
KEEPS_DIRECTION = Rule(
    forbidden=_LIBRARY, why="this answer must come from the cosines you computed")
# other random sources need no rule: they cannot reproduce the recipe's draws, which the check compares one by one
GENERATOR = Rule(
    forbidden=_LIBRARY,
    why="this exercise asks you to write the generator yourself, draw for draw to the recipe",
    allowed=("torch.rand", "torch.randint", "torch.Generator"))
# Part 3 of assignment 5 is handed rnnkit's layers and Trainer (whose code runs inside the model: rnnkit is not
# forbidden as a whole here); the model class is the student's, its training data comes from their own adding_problem
GATED_MODEL = Rule(
    forbidden=("rnnkit.data", "rnnkit.models", "rnnkit.experiments", "rnnkit.grading"),
    why="this part asks for your own model class on rnnkit's layers, trained on your own adding_problem data",
    allowed=("rnnkit.RNN", "rnnkit.GRU", "rnnkit.LSTM", "rnnkit.Trainer", "rnnkit.TrainConfig"))

# assignment 06 (char lm)
CHARLM_OWN = Rule(forbidden=("rnnkit.*",), why="this part asks you to write it yourself with torch")
CHARLM_TRAIN = Rule(forbidden=("rnnkit.*", "torch.nn.utils.clip_grad_*", "torch.nn.utils.clip_grads_with_norm_",
                         "torch.nn.utils.get_total_norm"),
              why="clip with your own clip_grad_norm from Assignment 2 (one norm over all gradients) and write the "
                  "training loop yourself", allowed=("torch.nn.functional.cross_entropy",))
CHARLM_PERPLEXITY = Rule(forbidden=("rnnkit.*", "torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
                              "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss"),
                   why="add up the negative log-likelihood yourself, from your next_symbol_log_probs of Assignment 1",
                   allowed=("torch.log_softmax",))
CHARLM_SAMPLE = Rule(forbidden=("rnnkit.*",), why="sample with your own sample_until_eos from Assignment 1")
CHARLM_MODEL = Rule(forbidden=("rnnkit.*", "torch.nn.utils.clip_grad_*"),
              why="build the model the notebook hands out and train it with your own train_epoch",
              # the model and the names the notebook hands out (its setup cell loads the training names)
              allowed=("rnnkit.CharLM", "rnnkit.models.CharLM", "rnnkit.data.names.load_names",
                       "rnnkit.data.load_names"))

# assignment 07 (backward)
BACKWARD_RULE = Rule(forbidden=("torch.autograd.*", "torch.Tensor.backward", "torch.func.*", "torch.enable_grad",
                        "torch.set_grad_enabled", "rnnkit.*", "torch.nn.LSTM*", "torch.nn.GRU*", "torch.lstm_cell",
                        "torch.gru_cell", "torch._VF.*"),
             why="write the backward pass yourself with tensor algebra (the grader calls your functions with autograd "
                 "switched off)")


# assignment 08 (seq2seq)
SEQ2SEQ_NO_LAYERS = ("rnnkit.*", "torch.nn.GRU*", "torch.nn.RNN*", "torch.nn.LSTM*", "torch.gru_cell", "torch._VF.*")
SEQ2SEQ_ENCODER = Rule(forbidden=SEQ2SEQ_NO_LAYERS,
                       why="build the encoder from your own gru_cell_forward of Assignment 4")
SEQ2SEQ_LOSS = Rule(forbidden=SEQ2SEQ_NO_LAYERS, why="run the model the notebook hands out step by step yourself",
             allowed=("torch.nn.functional.cross_entropy",))
SEQ2SEQ_SEARCH = Rule(forbidden=("rnnkit.*", "torch.nn.*"), why="write the search yourself; it only calls step_fn")
SEQ2SEQ_MODEL = Rule(forbidden=SEQ2SEQ_NO_LAYERS,
                     why="train the Seq2Seq the notebook hands out, built on your own functions")


RULES: dict[str, Rule] = {
    # assignment 1
    "rnn_cell_forward": RNN_CELL,
    "rnn_forward": RNN_CELL,
    "next_symbol_log_probs": LOG_SOFTMAX,
    "sequence_nll": NLL,
    "sample_until_eos": SAMPLING,
    # assignment 2
    "rnn_bptt": BPTT,
    "hidden_grad_norms": BPTT,
    "numeric_gradient": NUMERIC_GRADIENT,
    "relative_error": RELATIVE_ERROR,
    "clip_grad_norm": CLIPPING,
    "clip_grad_value": CLIPPING,
    "clip_cosines": COSINES,
    "keeps_direction": KEEPS_DIRECTION,
    # assignment 3
    "lstm_cell_forward": LSTM_CELL,
    "lstm_forward": LSTM_CELL,
    "lstm_param_count": PARAM_COUNT,
    "forget_bias_retention": LSTM_CELL,
    # assignment 4
    "gru_cell_reset_after": GRU_CELL,
    "gru_cell_reset_before": GRU_CELL,
    "gru_forward": GRU_CELL,
    "gru_param_count": PARAM_COUNT,
    "gru_cell_from_torch": GRU_FROM_TORCH,
    # assignment 5
    "adding_problem": GENERATOR,
    "copy_task": GENERATOR,
    "adding_gated_beats_baseline": GATED_MODEL,
    # 06 char lm
    "build_vocab": CHARLM_OWN,
    "encode_names": CHARLM_OWN,
    "decode_ids": CHARLM_OWN,
    "tbptt_batches": CHARLM_OWN,
    "train_epoch": CHARLM_TRAIN,
    "perplexity": CHARLM_PERPLEXITY,
    "sample_name": CHARLM_SAMPLE,
    "names_perplexity_8": CHARLM_MODEL,
    "names_perplexity_9": CHARLM_MODEL,
    "names_perplexity_10": CHARLM_MODEL,
    "names_perplexity_12": CHARLM_MODEL,
    # 07 backward
    "lstm_state_grad_norms": BACKWARD_RULE,
    "gradient_path": BACKWARD_RULE,
    "lstm_cell_backward": BACKWARD_RULE,
    "gru_cell_backward_reset_after": BACKWARD_RULE,
    "gru_cell_backward_reset_before": BACKWARD_RULE,
    "lstm_bptt": BACKWARD_RULE,
    "gru_bptt": BACKWARD_RULE,
    # 08 seq2seq
    "bi_encoder": SEQ2SEQ_ENCODER,
    "teacher_forcing_loss": SEQ2SEQ_LOSS,
    "greedy_search": SEQ2SEQ_SEARCH,
    "beam_search": SEQ2SEQ_SEARCH,
    "reverse_accuracy_40": SEQ2SEQ_MODEL,
    "reverse_accuracy_55": SEQ2SEQ_MODEL,
    "reverse_accuracy_70": SEQ2SEQ_MODEL,
    "reverse_accuracy_75": SEQ2SEQ_MODEL,
}
