"""Pink's prompt at inference, as upstream builds it (demo.py, inference.ipynb, pink/eval/*.py):

    conv = conv_templates["llamav2"].copy()     # pink/conversation.py conv_llama2
    conv.set_system("Image: " + num_patches * "<im_patch>")
    conv.append_message("[INST]", question); conv.append_message("[/INST]", None)
    prompt = conv.get_prompt()
    input_ids = tokenizer([prompt]).input_ids  # LlamaTokenizer, bos in front

``copy()`` of the LLAMA2 style sets the system template "[INST] <<SYS>>\\n{}\\n<</SYS>>\\n\\n", and
get_prompt() appends the first message and a space, then the role "[/INST]" of the empty answer:

    [INST] <<SYS>>\\nImage: <im_patch>...<im_patch>\\n<</SYS>>\\n\\n{question} [/INST]

The image features (mm_projector of the CLIP patches, in patch order) replace the embeddings of
the <im_patch> ids, which must be exactly num_patches consecutive ids (upstream raises
otherwise). <im_start>/<im_end> exist in upstream's constants but Pink's prompts never use them.

Questions per task (upstream picks one of many phrasings at random from
pink/datasets/Templates.py, with " <image>" removed; a server needs one fixed phrasing, so the
first of each list is the default, and model.json's pink.prompt.tasks may change them):
  caption          ShortImageCaption[0]
  vqa              QuestionAnswer[0], the question between <qes> and </qes>
  rec              VisualGrounding[0], the expression between <des> and </des>
  region_caption   GroundingCaption[0], the box between <loc> and </loc>
Boxes are written "[x0,y0,x1,y1]" with each coordinate divided by the image's width or height
(so in [0, 1]) and 3 decimals ("{:.3f}"), no spaces, as VisualGrounding.py and the demo do; the
model answers REC with the same form.
"""

LLAMAV2_SYSTEM = "[INST] <<SYS>>\n{}\n<</SYS>>\n\n"
LLAMAV2_ASSISTANT = "[/INST]"

SYSTEM = "Image: {}"
IMAGE_TOKEN = "<im_patch>"
BOX_DECIMALS = 3

TASKS = {
    "caption": "Describe this image as simply as possible.",
    "vqa": "Can you give me a straightforward answer to my question: <qes>{}</qes> Consider the image when answering.",
    "rec": "Where is <des>{}</des>?",
    "region_caption": "Can you give me a description of the region <loc>{}</loc> in image?",
}


def format_box(box, decimals=BOX_DECIMALS):
    """box: (x0, y0, x1, y1) already divided by the image width / height."""
    return "[" + ",".join("{:.{}f}".format(float(v), decimals) for v in box) + "]"


def instruction(task, text=None, box=None, tasks=None, decimals=BOX_DECIMALS):
    t = (tasks or TASKS)[task]
    if task == "caption":
        return t
    if task == "region_caption":
        return t.replace("{}", format_box(box, decimals), 1)
    return t.replace("{}", text, 1)


def llamav2(system, message):
    """get_prompt() of conv_llama2.copy() with set_system(system) and one user message."""
    return LLAMAV2_SYSTEM.format(system) + message + " " + LLAMAV2_ASSISTANT


def prompt_text(task, text=None, box=None, image_tokens=256, system=SYSTEM, image_token=IMAGE_TOKEN, tasks=None,
                decimals=BOX_DECIMALS):
    return llamav2(system.replace("{}", image_token * image_tokens, 1),
                   instruction(task, text, box, tasks, decimals))


def prompt_ids(tok, task, text=None, box=None, image_tokens=256, system=SYSTEM, image_token=IMAGE_TOKEN,
               tasks=None, decimals=BOX_DECIMALS):
    """(ids, image_offset): the prompt's ids (pink_ref.tokenizer.LlamaTokenizer) and the index of
    the first of the image_tokens consecutive image-token ids, where the image features go."""
    ids = tok.encode(prompt_text(task, text, box, image_tokens, system, image_token, tasks, decimals))
    patch = tok.added[image_token]
    at = [i for i, t in enumerate(ids) if t == patch]
    if len(at) != image_tokens or at != list(range(at[0], at[0] + image_tokens)):
        raise ValueError("the image tokens are not %d consecutive ids" % image_tokens)
    return ids, at[0]
