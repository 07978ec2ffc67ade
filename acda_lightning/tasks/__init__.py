"""One LightningModule per task (``tasks/<task>.py``), each connecting a network, a loss and its metrics.

Configs name them as ``acda_lightning.tasks.<Class>``; the class is found in whichever module of this
package defines it, so a new task is a new file, with no import list to edit here.
"""

from ..utils.plugins import package_getattr

__getattr__ = package_getattr(__name__)
