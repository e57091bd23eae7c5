import os

import torch
from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings")

application = get_wsgi_application()

# The web process preprocesses each drawing with torch (ml/preprocess.py), one small image per
# request thread. Torch's default pool of one thread per core would make every request's few
# tensor ops wait at a barrier for the other cores' threads (and spin there): on 2 cores that
# doubled the CPU of a request and, with the workers busy, multiplied its latency.
torch.set_num_threads(settings.WEB_TORCH_THREADS)
